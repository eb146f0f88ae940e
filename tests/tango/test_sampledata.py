"""The seeded sample-data maker shared by examples, tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import tango.sampledata as sampledata
from tango.sampledata import (DIGIT_CLASSES, KNOWN_CLASSES, SHAPE_CLASSES, make_cluttered_digits, make_digits,
                              make_shapes, write_yolo_dataset)


def _same(a, b) -> bool:
    return all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_shapes_are_reproducible_and_prefix_stable():
    a = make_shapes(6, size=96, seed=3)
    assert _same(a, make_shapes(6, size=96, seed=3))
    assert _same(a[:4], make_shapes(4, size=96, seed=3))
    assert not _same(a, make_shapes(6, size=96, seed=4))


@pytest.mark.parametrize("classes", [SHAPE_CLASSES, SHAPE_CLASSES + DIGIT_CLASSES, ("digit_7", "cross")])
def test_shape_boxes_are_valid(classes):
    size = 128
    for image, boxes in make_shapes(30, size=size, seed=1, classes=classes):
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and boxes.shape[1] == 5 and 1 <= len(boxes) <= 4
        cls, xy = boxes[:, 0], boxes[:, 1:]
        assert np.all(cls == cls.round()) and np.all((cls >= 0) & (cls < len(classes)))
        assert np.all(xy >= 0) and np.all(xy <= size)
        w, h = xy[:, 2] - xy[:, 0], xy[:, 3] - xy[:, 1]
        assert np.all(w >= 1) and np.all(h >= 1) and np.all(np.maximum(w, h) <= 0.30 * size + 1)
        for i in range(len(boxes)):  # default: objects never overlap
            for j in range(i):
                iw = min(xy[i, 2], xy[j, 2]) - max(xy[i, 0], xy[j, 0])
                ih = min(xy[i, 3], xy[j, 3]) - max(xy[i, 1], xy[j, 1])
                assert iw <= 0 or ih <= 0


def test_boxes_are_tight_on_a_plain_canvas(monkeypatch):
    import tango.sampledata as sd

    # With a flat background, every object pixel differs from it: the box must be its exact extent.
    monkeypatch.setattr(sd, "_background", lambda rng, size: np.full((size, size, 3), 128.0))
    for image, boxes in sd.make_shapes(10, size=96, seed=5, classes=KNOWN_CLASSES):
        changed = np.abs(image.astype(int) - 128).max(2) > 0
        for _, x1, y1, x2, y2 in boxes.astype(int):
            inside = changed[y1:y2, x1:x2]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        covered = np.zeros_like(changed)
        for _, x1, y1, x2, y2 in boxes.astype(int):
            covered[y1:y2, x1:x2] = True
        assert not (changed & ~covered).any()


def test_unknown_class_is_refused():
    with pytest.raises(ValueError, match="unknown classes"):
        make_shapes(1, classes=("circle", "hexagon"))


def test_digits():
    images, labels = make_digits(size=16, seed=0)
    assert images.shape == (1797, 16, 16, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    again, labels_again = make_digits(size=16, seed=0)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    _, other = make_digits(size=16, seed=1)
    assert not np.array_equal(labels, other) and np.array_equal(np.sort(labels), np.sort(other))


def test_cluttered_digits_are_seeded_and_prefix_stable():
    images, labels = make_cluttered_digits(40, size=24, seed=2, part="train")
    assert images.shape == (40, 24, 24, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    again, labels_again = make_cluttered_digits(40, size=24, seed=2, part="train")
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    head, head_labels = make_cluttered_digits(10, size=24, seed=2, part="train")
    assert np.array_equal(head, images[:10]) and np.array_equal(head_labels, labels[:10])
    other, _ = make_cluttered_digits(10, size=24, seed=3, part="train")
    assert not np.array_equal(other, head)
    # The parts are different images, not the same draws relabelled.
    test_images, _ = make_cluttered_digits(10, size=24, seed=2, part="test")
    assert not np.array_equal(test_images, head)
    assert make_cluttered_digits(0, size=24)[0].shape == (0, 24, 24, 3)


def test_cluttered_digit_parts_never_share_a_glyph(monkeypatch):
    pools = {part: set(sampledata._glyph_pool(part).tolist()) for part in sampledata.GLYPH_PARTS}
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"]
    assert not pools["val"] & pools["test"]
    assert set().union(*pools.values()) == set(range(1797))
    # Every image of a part draws its glyph from that part's pool.
    drawn: list[int] = []
    real = sampledata._cluttered_digit

    def spy(rng, size, pick):  # noqa: ANN001, ANN202
        drawn.append(pick)
        return real(rng, size, pick)

    monkeypatch.setattr(sampledata, "_cluttered_digit", spy)
    for part, pool in pools.items():
        drawn.clear()
        _, labels = make_cluttered_digits(30, size=24, seed=0, part=part)
        assert len(drawn) == 30 and set(drawn) <= pool
        assert labels.tolist() == [int(sampledata._digits()[1][g]) for g in drawn]
    with pytest.raises(ValueError, match="unknown part"):
        make_cluttered_digits(1, part="holdout")


def test_write_yolo_dataset(tmp_path):
    train, val = make_shapes(3, size=64, seed=0), make_shapes(2, size=64, seed=1)
    data = write_yolo_dataset(train, tmp_path / "ds", SHAPE_CLASSES, val_samples=val)
    cfg = yaml.safe_load(data.read_text())
    assert cfg["names"] == dict(enumerate(SHAPE_CLASSES)) and cfg["nc"] == 3
    root = tmp_path / "ds"
    assert sorted(p.name for p in (root / "images" / "val").iterdir()) == ["000000.png", "000001.png"]
    rows = np.loadtxt(root / "labels" / "train" / "000000.txt", ndmin=2)
    boxes = train[0][1]
    assert rows[:, 0].tolist() == boxes[:, 0].tolist()
    np.testing.assert_allclose(rows[:, 1], (boxes[:, 1] + boxes[:, 3]) / 2 / 64, atol=1e-6)
    np.testing.assert_allclose(rows[:, 4], (boxes[:, 4] - boxes[:, 2]) / 64, atol=1e-6)
