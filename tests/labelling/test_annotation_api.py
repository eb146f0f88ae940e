"""The annotation API a keyboard-first UI drives: classes, labels (class or boxes) with who/when,
review, bulk edits, next image, undo from the label history, and refusals a person can act on."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import image_bytes, zip_bytes
from tests.labelling.conftest import make_dataset, upload

PROBLEM = "application/problem+json"


def _images(client, dataset_id: str, n: int, size=(20, 30)) -> list[str]:  # noqa: ANN001
    rng = np.random.default_rng(n)
    files = {f"img{i:02d}.png": image_bytes(rng.integers(0, 255, (*size, 3), dtype=np.uint8)) for i in range(n)}
    assert upload(client, dataset_id, zip_bytes(files), format="none")["result"]["imported"] == n
    items = client.get(f"/datasets/{dataset_id}/images", params={"limit": 500}).json()["items"]
    return [i["id"] for i in sorted(items, key=lambda i: i["source_name"])]


def _problem(resp, status: int, fragment: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM and fragment in resp.json()["detail"], resp.json()


def test_classes_add_rename_delete(client):
    make_dataset(client, "ds", "classify", ["cat"])
    dog = client.post("/datasets/ds/classes", json={"name": "dog"}).json()
    assert dog["index"] == 1
    _problem(client.post("/datasets/ds/classes", json={"name": "dog"}), 409, "already has a class 'dog'")
    _problem(client.post("/datasets/ds/classes", json={"name": "a/b"}), 422, "without '/'")
    assert client.patch(f"/datasets/ds/classes/{dog['id']}", json={"name": "puppy"}).json()["name"] == "puppy"
    (image,) = _images(client, "ds", 1)
    client.put(f"/datasets/ds/images/{image}/label", json={"class_id": dog["id"]})
    _problem(client.delete(f"/datasets/ds/classes/{dog['id']}"), 409, "used by 1 label")
    cat = client.get("/datasets/ds/classes").json()[0]
    assert client.delete(f"/datasets/ds/classes/{cat['id']}").status_code == 204
    assert [c["name"] for c in client.get("/datasets/ds/classes").json()] == ["puppy"]
    _problem(client.get("/datasets/nope"), 404, "no dataset 'nope'")
    _problem(client.post("/datasets", json={"id": "ds", "task": "classify"}), 409, "already exists")


def test_labels_record_who_and_when_and_refuse_stale_saves(client):
    make_dataset(client, "ds", "classify", ["cat", "dog"])
    image, *_ = _images(client, "ds", 2)
    saved = client.put(f"/datasets/ds/images/{image}/label", json={"class_name": "cat"},
                       headers={"X-Tango-User": "ana"}).json()
    assert saved["class_name"] == "cat" and saved["updated_by"] == "ana" and saved["revision"] == 1
    assert saved["source"] == "human" and saved["review_state"] == "unreviewed"
    _problem(client.put(f"/datasets/ds/images/{image}/label", json={"class_name": "dog", "expected_revision": 0},
                        headers={"X-Tango-User": "bo"}), 409, "changed it; reload it")
    again = client.put(f"/datasets/ds/images/{image}/label", json={"class_name": "dog", "expected_revision": 1})
    assert again.json()["revision"] == 2 and again.json()["updated_by"] == "anonymous"
    reviewed = client.post(f"/datasets/ds/images/{image}/review", json={"state": "approved"},
                           headers={"X-Tango-User": "rev"}).json()
    assert reviewed["review_state"] == "approved" and reviewed["reviewed_by"] == "rev"
    assert reviewed["updated_by"] == "anonymous"  # a review is not an edit
    history = client.get(f"/datasets/ds/images/{image}/history").json()
    assert [(h["action"], h["user"]) for h in history] == [("review", "rev"), ("save", "anonymous"), ("save", "ana")]
    assert history[1]["before"]["value"] != history[1]["after"]["value"]
    counts = client.get("/datasets/ds").json()["counts"]
    assert counts == {"images": 2, "labelled": 1, "unlabelled": 1, "approved": 1, "rejected": 0, "open_suggestions": 0}
    _problem(client.put(f"/datasets/ds/images/{image}/label", json={"boxes": []}), 422, "class_id or class_name")
    _problem(client.put(f"/datasets/ds/images/{image}/label", json={"class_name": "eel"}), 422, "no class with name")


def test_boxes_are_checked_against_the_image(client):
    make_dataset(client, "ds", "detect", ["circle"])
    (image,) = _images(client, "ds", 1)  # 30 wide, 20 high
    box = {"class_name": "circle", "x1": 1, "y1": 2, "x2": 30.3, "y2": 20}
    saved = client.put(f"/datasets/ds/images/{image}/label", json={"boxes": [box]}).json()
    assert saved["boxes"][0]["x2"] == 30.0  # within half a pixel: clipped
    _problem(client.put(f"/datasets/ds/images/{image}/label", json={"boxes": [{**box, "x2": 31}]}), 422,
             "outside the 30x20 image")
    _problem(client.put(f"/datasets/ds/images/{image}/label", json={"boxes": [{**box, "x2": 0.5}]}), 422, "x2 > x1")
    assert client.put(f"/datasets/ds/images/{image}/label", json={"boxes": []}).json()["boxes"] == []


def test_next_walks_the_pool_and_skips(client):
    make_dataset(client, "ds", "classify", ["cat"])
    ids = _images(client, "ds", 3)
    first = client.get("/datasets/ds/next").json()
    assert first["source"] == "pool" and first["remaining"] == 3 and first["image"]["id"] in ids
    skipped = client.get("/datasets/ds/next", params={"after": first["image"]["id"]}).json()
    assert skipped["image"]["id"] != first["image"]["id"]
    client.put(f"/datasets/ds/images/{first['image']['id']}/label", json={"class_name": "cat"})
    after = client.get("/datasets/ds/next").json()
    assert after["remaining"] == 2 and after["image"]["id"] == skipped["image"]["id"]
    content = client.get(after["image"]["content_url"])
    assert content.headers["content-type"] == "image/png" and content.content.startswith(b"\x89PNG")
    assert content.headers["etag"] == f'"{after["image"]["sha256"]}"'


def test_bulk_edit_is_one_undo_step_and_undo_walks_back(client):
    make_dataset(client, "ds", "classify", ["cat", "dog"])
    ids = _images(client, "ds", 4)
    me = {"X-Tango-User": "ana"}
    client.put(f"/datasets/ds/images/{ids[0]}/label", json={"class_name": "cat"}, headers=me)
    bulk = client.post("/datasets/ds/bulk", json={"action": "set_class", "class_name": "dog",
                                                  "image_ids": ids[:3] + ["missing"]}, headers=me).json()
    assert bulk["changed"] == 3
    assert bulk["skipped"] == [{"image_id": "missing", "reason": "not an image of this dataset"}]
    labels = {i["id"]: (i["label"] or {}).get("class_name") for i in client.get("/datasets/ds/images").json()["items"]}
    assert [labels[i] for i in ids] == ["dog", "dog", "dog", None]
    undo = client.post("/datasets/ds/undo", headers=me).json()
    assert undo["action"] == "bulk_set_class" and undo["reverted"] == 3
    labels = {i["id"]: (i["label"] or {}).get("class_name") for i in client.get("/datasets/ds/images").json()["items"]}
    assert [labels[i] for i in ids] == ["cat", None, None, None]
    assert client.post("/datasets/ds/undo", headers=me).json()["action"] == "save"
    assert client.get(f"/datasets/ds/images/{ids[0]}").json()["label"] is None
    assert client.post("/datasets/ds/undo", headers=me).json() == {"operation": None, "action": None, "reverted": 0,
                                                                   "images": []}


def test_undo_refuses_when_someone_else_changed_the_image_since(client):
    make_dataset(client, "ds", "classify", ["cat", "dog"])
    (image,) = _images(client, "ds", 1)
    client.put(f"/datasets/ds/images/{image}/label", json={"class_name": "cat"}, headers={"X-Tango-User": "ana"})
    client.put(f"/datasets/ds/images/{image}/label", json={"class_name": "dog"}, headers={"X-Tango-User": "bo"})
    _problem(client.post("/datasets/ds/undo", headers={"X-Tango-User": "ana"}), 409, "changed since")
    assert client.get(f"/datasets/ds/images/{image}").json()["label"]["class_name"] == "dog"


def test_bulk_review_and_clear(client):
    make_dataset(client, "ds", "classify", ["cat"])
    ids = _images(client, "ds", 3)
    client.post("/datasets/ds/bulk", json={"action": "set_class", "class_name": "cat", "image_ids": ids[:2]})
    review = client.post("/datasets/ds/bulk", json={"action": "review", "review_state": "approved",
                                                    "image_ids": ids}).json()
    assert review["changed"] == 2 and review["skipped"][0]["reason"] == "has no label to review"
    assert client.get("/datasets/ds/images", params={"state": "approved"}).json()["total"] == 2
    assert client.post("/datasets/ds/bulk", json={"action": "clear", "image_ids": ids}).json()["changed"] == 2
    assert client.get("/datasets/ds/images", params={"state": "unlabelled"}).json()["total"] == 3
    _problem(client.post("/datasets/ds/bulk", json={"action": "review", "image_ids": ids}), 422, "review_state")


@pytest.mark.parametrize("path", ["/datasets/ds/images/nope", "/datasets/ds/images/nope/history"])
def test_unknown_images_are_404(client, path):
    make_dataset(client, "ds", "classify", ["cat"])
    _problem(client.get(path), 404, "has no image 'nope'")
