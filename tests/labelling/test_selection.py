"""The `select` job (every strategy, classify and detect, with an ONNX model or a cold start) and
the `preannotate` job (suggestions a person accepts, bulk-accepts or undoes)."""

from __future__ import annotations

import numpy as np
import pytest

from labelling import strategies
from tests.factories import image_bytes, onnx_colour_classifier, onnx_grid_detector, put_onnx_model, zip_bytes
from tests.labelling.conftest import make_dataset, start, upload

COLOURS = ("red", "green", "blue")


def _colour_images(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Pure colours (a model is sure of them) and muddy mixes (it is not), with some texture."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        if i % 3 == 0:
            mix = np.full(3, 1 / 3) + rng.normal(0, 0.02, 3)  # grey-ish: a toss-up
        else:
            mix = np.eye(3)[i % 3] * 0.9 + 0.05
        base = np.clip(mix * 255, 0, 255)
        out[f"c{i:02d}.png"] = np.clip(base + rng.normal(0, 6, (16, 16, 3)), 0, 255).astype(np.uint8)
    return out


@pytest.fixture
def colours(client):
    make_dataset(client, "ds", "classify", COLOURS)
    images = _colour_images(30)
    upload(client, "ds", zip_bytes({k: image_bytes(v) for k, v in images.items()}), format="none")
    put_onnx_model(client.runtime.store, "colour", *onnx_colour_classifier(COLOURS))
    items = client.get("/datasets/ds/images", params={"limit": 100}).json()["items"]
    return {i["source_name"]: i["id"] for i in items}


@pytest.mark.parametrize("strategy", list(strategies.STRATEGIES))
def test_select_returns_distinct_unlabelled_images_and_respects_the_batch(client, colours, strategy):
    labelled = [colours["c01.png"], colours["c02.png"]]
    for image in labelled:
        client.put(f"/datasets/ds/images/{image}/label", json={"class_name": "green"})
    model = {} if strategy in ("random", "kcenter", "cold_start") else {"model_id": "colour"}
    job = start(client, "select", dataset_id="ds", batch_size=7, strategy=strategy, **model)
    assert job["state"] == "succeeded", job["error"]
    selected = job["result"]["selected"]
    assert len(selected) == 7 and len(set(selected)) == 7
    assert not set(selected) & set(labelled) and set(selected) <= set(colours.values())
    queue = client.get("/datasets/ds/queue").json()
    assert queue["job_id"] == job["id"] and queue["strategy"] == strategy
    assert [q["image_id"] for q in queue["items"]] == selected


def test_uncertainty_picks_what_the_model_doubts_first(client, colours):
    job = start(client, "select", dataset_id="ds", batch_size=10, strategy="margin", model_id="colour")
    names = {v: k for k, v in colours.items()}
    picked = [names[i] for i in job["result"]["selected"]]
    assert all(int(n[1:3]) % 3 == 0 for n in picked), picked  # the ten grey-ish ones
    scores = job["result"]["scores"]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9


def test_default_strategy_with_and_without_a_model(client, colours):
    cold = start(client, "select", dataset_id="ds", batch_size=5)
    assert cold["result"]["strategy"] == strategies.COLD_START_STRATEGY == "cold_start"
    warm = start(client, "select", dataset_id="ds", batch_size=5, model_id="colour")
    assert warm["result"]["strategy"] == strategies.DEFAULT_STRATEGY
    assert warm["result"]["measure"] == "margin"


def test_a_batch_larger_than_the_pool_takes_the_pool(client, colours):
    job = start(client, "select", dataset_id="ds", batch_size=500, strategy="hybrid", model_id="colour")
    assert sorted(job["result"]["selected"]) == sorted(colours.values())


def test_next_follows_the_queue_then_the_pool(client, colours):
    job = start(client, "select", dataset_id="ds", batch_size=2, strategy="margin", model_id="colour")
    first, second = job["result"]["selected"]
    nxt = client.get("/datasets/ds/next").json()
    assert nxt["source"] == "queue" and nxt["image"]["id"] == first and nxt["remaining"] == 2
    assert client.get("/datasets/ds/next", params={"after": first}).json()["image"]["id"] == second
    client.put(f"/datasets/ds/images/{first}/label", json={"class_name": "red"})
    assert client.get("/datasets/ds/next").json()["image"]["id"] == second
    client.put(f"/datasets/ds/images/{second}/label", json={"class_name": "red"})
    rest = client.get("/datasets/ds/next").json()
    assert rest["source"] == "pool" and rest["remaining"] == 28
    assert client.get("/datasets/ds/next", params={"source": "queue"}).json()["image"] is None


def test_select_prechecks(client, colours):
    def refused(params: dict, fragment: str) -> None:
        resp = client.post("/jobs", json={"kind": "select", "params": {"dataset_id": "ds", **params}})
        assert resp.status_code == 422 and fragment in resp.json()["detail"], resp.json()

    refused({"strategy": "margin"}, "give model_id")
    refused({"model_id": "ghost"}, "no models/ghost/model.onnx")
    put_onnx_model(client.runtime.store, "grid", *onnx_grid_detector(COLOURS))
    refused({"model_id": "grid"}, "is a detect model")
    refused({"strategy": "magic"}, "strategy")
    assert client.get("/jobs", params={"kind": "select"}).json()["total"] == 0


@pytest.fixture
def boxes(client):
    make_dataset(client, "det", "detect", COLOURS)
    rng = np.random.default_rng(3)
    files = {}
    for i in range(12):
        image = np.zeros((32, 32, 3), np.uint8)
        for _ in range(i % 3 + 1):
            y, x = rng.integers(0, 4, 2) * 8
            image[y:y + 8, x:x + 8] = rng.choice([255, 128], 3) * np.eye(3)[rng.integers(3)]
        files[f"d{i:02d}.png"] = image_bytes(image)
    upload(client, "det", zip_bytes(files), format="none")
    put_onnx_model(client.runtime.store, "grid", *onnx_grid_detector(COLOURS))


@pytest.mark.parametrize("aggregate", ["mean", "max"])
@pytest.mark.parametrize("strategy", ["entropy", "hybrid"])
def test_select_on_detection_scores(client, boxes, strategy, aggregate):
    job = start(client, "select", dataset_id="det", batch_size=5, strategy=strategy, model_id="grid",
                aggregate=aggregate)
    assert job["state"] == "succeeded", job["error"]
    assert len(job["result"]["selected"]) == len(set(job["result"]["selected"])) == 5


def test_preannotate_classify_then_accept_bulk_and_undo(client, colours):
    job = start(client, "preannotate", dataset_id="ds", model_id="colour", batch=4, concurrency=2)
    assert job["state"] == "succeeded" and job["progress"] == 1.0
    assert job["result"]["images"] == job["result"]["suggested"] == 30
    names = {v: k for k, v in colours.items()}
    open_ = client.get("/datasets/ds/suggestions", params={"limit": 100}).json()
    assert open_["total"] == 30
    for s in open_["items"]:
        i = int(names[s["image_id"]][1:3])
        if i % 3:
            assert s["class_name"] == COLOURS[i % 3] and s["score"] > 0.9
    sure = next(s for s in open_["items"] if int(names[s["image_id"]][1:3]) % 3 == 1)
    label = client.post(f"/datasets/ds/suggestions/{sure['id']}/accept", headers={"X-Tango-User": "ana"}).json()
    assert label["class_name"] == "green" and label["source"] == f"suggestion:{sure['id']}"
    resp = client.post(f"/datasets/ds/suggestions/{sure['id']}/accept")
    assert resp.status_code == 409 and "already accepted" in resp.json()["detail"]
    bulk = client.post("/datasets/ds/bulk", json={"action": "accept_suggestions", "image_ids": list(colours.values()),
                                                  "min_score": 0.9}, headers={"X-Tango-User": "ana"}).json()
    assert bulk["changed"] == 19  # the other sure ones; the greys and the accepted one are skipped
    assert client.get("/datasets/ds").json()["counts"]["labelled"] == 20
    undo = client.post("/datasets/ds/undo", headers={"X-Tango-User": "ana"}).json()
    assert undo["action"] == "accept_suggestion" and undo["reverted"] == 19
    assert client.get("/datasets/ds/suggestions").json()["total"] == 29  # reopened
    undo = client.post("/datasets/ds/undo", headers={"X-Tango-User": "ana"}).json()
    assert undo["reverted"] == 1 and client.get("/datasets/ds/suggestions").json()["total"] == 30


def test_preannotate_detect_suggests_scored_boxes(client, boxes):
    job = start(client, "preannotate", dataset_id="det", model_id="grid", conf=0.5)
    assert job["state"] == "succeeded" and job["result"]["suggested"] == 12
    items = client.get("/datasets/det/suggestions", params={"limit": 100}).json()["items"]
    assert sum(len(s["boxes"]) for s in items) == job["result"]["boxes"] > 0
    for s in items:
        for b in s["boxes"]:
            assert b["score"] >= 0.5 and b["x2"] - b["x1"] == 8 and b["class_name"] in COLOURS
    # A person's own label supersedes the model's suggestion.
    s = items[0]
    client.put(f"/datasets/det/images/{s['image_id']}/label", json={"boxes": []})
    assert client.get("/datasets/det/suggestions", params={"state": "superseded"}).json()["total"] == 1
    image = client.get(f"/datasets/det/images/{items[1]['image_id']}").json()
    assert image["suggestions"][0]["id"] == items[1]["id"]


def test_preannotate_needs_classes_the_dataset_has(client):
    make_dataset(client, "other", "classify", ["cat"])
    put_onnx_model(client.runtime.store, "colour", *onnx_colour_classifier(COLOURS))
    resp = client.post("/jobs", json={"kind": "preannotate", "params": {"dataset_id": "other", "model_id": "colour"}})
    assert resp.status_code == 422 and "none of which the dataset has" in resp.json()["detail"]
