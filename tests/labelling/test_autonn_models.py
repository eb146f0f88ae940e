"""`select` and `preannotate` on models exported the way autonn exports them (torch -> ONNX opset
17 + onnxslim, card.json): a ResNet-style classifier and an Ultralytics YOLOv8-style detector."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import image_bytes, put_model_bundle, tiny_classifier, tiny_detector, zip_bytes
from tests.labelling.conftest import make_dataset, start, upload

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


def _images(client, dataset_id: str, n: int) -> None:
    rng = np.random.default_rng(0)
    files = {f"{i}.png": image_bytes(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for i in range(n)}
    assert upload(client, dataset_id, zip_bytes(files), format="none")["result"]["imported"] == n


def test_select_and_preannotate_with_an_autonn_classifier(client):
    make_dataset(client, "cls", "classify", CLASSES)
    _images(client, "cls", 12)
    put_model_bundle(client.runtime.store, "resnet", tiny_classifier(3), task="classify", classes=CLASSES,
                     input_size=32)
    job = start(client, "select", dataset_id="cls", batch_size=5, model_id="resnet")
    assert job["state"] == "succeeded", job["error"]
    assert len(set(job["result"]["selected"])) == 5
    job = start(client, "preannotate", dataset_id="cls", model_id="resnet")
    assert job["result"]["suggested"] == 12
    scores = [s["score"] for s in client.get("/datasets/cls/suggestions", params={"limit": 50}).json()["items"]]
    assert all(1 / 3 <= s <= 1 for s in scores)


def test_select_and_preannotate_with_an_autonn_detector(client, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo"))
    make_dataset(client, "det", "detect", CLASSES)
    _images(client, "det", 6)
    put_model_bundle(client.runtime.store, "yolo", tiny_detector(3), task="detect", classes=CLASSES, input_size=64)
    job = start(client, "select", dataset_id="det", batch_size=3, model_id="yolo", aggregate="mean")
    assert job["state"] == "succeeded", job["error"]
    assert len(set(job["result"]["selected"])) == 3
    job = start(client, "preannotate", dataset_id="det", model_id="yolo", conf=0.3)
    assert job["state"] == "succeeded" and job["result"]["suggested"] == 6 and job["result"]["boxes"] > 0
    for s in client.get("/datasets/det/suggestions").json()["items"]:
        for b in s["boxes"]:
            assert 0 <= b["x1"] < b["x2"] <= 48 and 0 <= b["y1"] < b["y2"] <= 40 and b["score"] >= 0.3
