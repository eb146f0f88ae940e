"""Frozen versions: the kernel's manifest contract, immutable, stratified and seeded splits, and
stable content hashes (same content -> same hash; any label change -> another)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from labelling.versions import assign_splits
from tango.datasets import load_version
from tango.spec import DatasetManifest
from tests.factories import image_bytes, zip_bytes
from tests.labelling.conftest import make_dataset, upload

CLASSES = ["a", "b", "c", "d"]


def _files(order: list[int]) -> dict[str, bytes]:
    rng = np.random.default_rng(11)
    images = [rng.integers(0, 255, (12, 12, 3), dtype=np.uint8) for _ in range(40)]
    return {f"{CLASSES[i % 4]}/img{i}.png": image_bytes(images[i]) for i in order}


def _freeze(client, dataset_id: str, **body) -> dict:
    resp = client.post(f"/datasets/{dataset_id}/versions", json=body, headers={"X-Tango-User": "vera"})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_same_content_gives_the_same_hash(client):
    make_dataset(client, "one", "classify", CLASSES)
    upload(client, "one", zip_bytes(_files(list(range(40)))))
    v1, v2 = _freeze(client, "one"), _freeze(client, "one")
    assert (v1["version"], v2["version"]) == ("v1", "v2")
    assert v1["content_hash"] == v2["content_hash"] and len(v1["content_hash"]) == 64
    # Another dataset, the same images imported in another order under other names: same hash.
    make_dataset(client, "two", "classify", CLASSES)
    upload(client, "two", zip_bytes({f"x/{name.replace('/', '_')}": data for name, data in
                                     reversed(list(_files(list(range(40))).items()))}), format="none")
    for item in client.get("/datasets/two/images", params={"limit": 100}).json()["items"]:
        cls = item["source_name"].split("/")[1].split("_")[0]
        assert client.put(f"/datasets/two/images/{item['id']}/label", json={"class_name": cls}).status_code == 200
    assert _freeze(client, "two")["content_hash"] == v1["content_hash"]
    # A different seed moves images between splits: another hash.
    assert _freeze(client, "one", seed=1)["content_hash"] != v1["content_hash"]


def test_a_label_change_changes_the_hash_and_old_versions_stay_as_they_were(client):
    make_dataset(client, "ds", "classify", CLASSES)
    upload(client, "ds", zip_bytes(_files(list(range(40)))))
    v1 = _freeze(client, "ds", version="first")
    image = client.get("/datasets/ds/images", params={"limit": 1}).json()["items"][0]
    old = image["label"]["class_name"]
    new = next(c for c in CLASSES if c != old)
    client.put(f"/datasets/ds/images/{image['id']}/label", json={"class_name": new})
    v2 = _freeze(client, "ds", version="second")
    assert v2["content_hash"] != v1["content_hash"]
    first = load_version(client.runtime.store, "ds", "first")
    assert first.content_hash == v1["content_hash"]
    assert next(i for i in first.items if i.sha256 == image["sha256"]).label == CLASSES.index(old)
    resp = client.post("/datasets/ds/versions", json={"version": "first"})
    assert resp.status_code == 409 and "immutable" in resp.json()["detail"]


def test_manifest_follows_the_kernel_contract(client):
    make_dataset(client, "ds", "classify", CLASSES)
    upload(client, "ds", zip_bytes(_files(list(range(40)))))
    version = _freeze(client, "ds", seed=3, val=0.2, test=0.2)
    manifest = DatasetManifest.model_validate(client.get("/datasets/ds/versions/v1/manifest").json())
    assert manifest.content_hash == version["content_hash"] and manifest.classes == CLASSES
    store = client.runtime.store
    assert version["manifest_url"] == store.url_for("datasets/ds/v1/manifest.json")
    for item in manifest.items:
        assert item.key == f"datasets/ds/images/{item.sha256}.png" and store.exists(item.key)
        assert (item.width, item.height) == (12, 12) and item.label is not None
    # Stratified: each class (10 images) gives 2 to val, 2 to test, 6 to train.
    per = Counter((manifest.classes[i.label], i.split) for i in manifest.items)
    assert all(per[(c, "train")] == 6 and per[(c, "val")] == 2 and per[(c, "test")] == 2 for c in CLASSES)
    assert version["counts"] == {"items": 40, "train": 24, "val": 8, "test": 8, "per_class": dict.fromkeys(CLASSES, 10)}
    assert version["created_by"] == "vera"


def test_rejected_labels_stay_out_and_approved_only_is_an_option(client):
    make_dataset(client, "ds", "classify", CLASSES)
    upload(client, "ds", zip_bytes(_files(list(range(8)))))
    ids = [i["id"] for i in client.get("/datasets/ds/images").json()["items"]]
    client.post(f"/datasets/ds/images/{ids[0]}/review", json={"state": "rejected"})
    client.post(f"/datasets/ds/images/{ids[1]}/review", json={"state": "approved"})
    assert _freeze(client, "ds")["counts"]["items"] == 7
    assert _freeze(client, "ds", include="approved")["counts"]["items"] == 1


def test_assign_splits_is_seeded_stratified_and_keeps_train_non_empty():
    strata = {f"{i:064x}": str(i % 3) for i in range(300)}
    a, b = assign_splits(strata, seed=5, val=0.1, test=0.2), assign_splits(strata, seed=5, val=0.1, test=0.2)
    assert a == b and a != assign_splits(strata, seed=6, val=0.1, test=0.2)
    counts = Counter((strata[s], split) for s, split in a.items())
    assert all(counts[(c, "test")] == 20 and counts[(c, "val")] == 10 for c in "012")
    assert assign_splits({"x" * 64: "0"}, seed=0, val=0.5, test=0.3) == {"x" * 64: "train"}


def test_nothing_to_freeze_is_refused(client):
    make_dataset(client, "ds", "detect")
    resp = client.post("/datasets/ds/versions", json={})
    assert resp.status_code == 422 and "no classes yet" in resp.json()["detail"]
    client.post("/datasets/ds/classes", json={"name": "circle"})
    resp = client.post("/datasets/ds/versions", json={})
    assert resp.status_code == 422 and "no labelled images" in resp.json()["detail"]
