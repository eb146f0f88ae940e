"""The numpy pre/post-processing every package ships (no torch, no ultralytics in packages)."""

import numpy as np
import torch
from PIL import Image
from torchvision.ops import batched_nms

from deploy_codegen.package_files import runner


def test_nms_matches_torchvision():
    rng = np.random.default_rng(0)
    for _ in range(5):
        xy = rng.uniform(0, 100, (200, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (200, 2))], axis=1).astype(np.float32)
        scores = rng.random(200).astype(np.float32)
        classes = rng.integers(0, 3, 200)
        ours = runner.detect(np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2],
                                             np.eye(3, dtype=np.float32)[classes] * scores[:, None]], axis=1).T[None],
                             conf=0.0, iou=0.5, max_det=1000)[0]
        theirs = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), 0.5)
        np.testing.assert_allclose(ours["boxes"], boxes[theirs.numpy()], atol=1e-4)
        assert ours["classes"].tolist() == classes[theirs.numpy()].tolist()


def test_detect_keeps_confident_boxes_and_scales_to_the_image():
    # Two anchors: one confident class-1 box, one below the threshold.
    out = np.zeros((1, 4 + 2, 2), np.float32)
    out[0, :, 0] = [32, 16, 8, 4, 0.1, 0.9]
    out[0, :, 1] = [10, 10, 4, 4, 0.2, 0.1]
    manifest = {"task": "detect", "input": {"shape": [1, 3, 64, 64]},
                "postprocess": {"conf": 0.25, "iou": 0.45, "max_det": 10}}
    found = runner.postprocess([out], manifest, ["a", "b"], sizes=[(128, 32)])[0]
    assert len(found) == 1 and found[0]["label"] == "b" and abs(found[0]["score"] - 0.9) < 1e-6
    assert np.allclose(found[0]["box"], [(32 - 4) * 2, (16 - 2) / 2, (32 + 4) * 2, (16 + 2) / 2])


def test_classify_top_k_and_preprocessing(tmp_path):
    probs = runner.classify(np.array([[0.0, 3.0, 1.0]]), ["a", "b", "c"], top_k=2)[0]
    assert [p["label"] for p in probs] == ["b", "c"] and abs(sum(runner.softmax(np.array([0.0, 3.0, 1.0])))
                                                            - 1) < 1e-9
    Image.fromarray(np.full((10, 20, 3), 255, np.uint8)).save(tmp_path / "white.png")
    manifest = {"input": {"shape": [1, 3, 8, 8]}, "preprocess": {"color": "RGB", "scale": "1/255"}}
    x, sizes = runner.preprocess([tmp_path / "white.png"], manifest)
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32 and np.allclose(x, 1.0) and sizes == [(20, 10)]
