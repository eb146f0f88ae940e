"""Small, seeded sample data for examples, tests and benchmarks (numpy and Pillow only).

`make_shapes` draws a detection set: one to four objects (geometric shapes, and digits taken from
scikit-learn's bundled 8x8 `load_digits` glyphs) on textured canvases, with exact boxes.
`make_digits` is a classification set of the same glyphs; `make_cluttered_digits` puts them, scaled,
shifted and turned, on noisy gradients with distractor strokes (a harder set, as large as asked,
whose test part never reuses a training glyph). `write_yolo_dataset` writes a
detection set in the folder layout Ultralytics' own loader reads.

Every image gets its own generator seeded by (seed, index), so `make_shapes(32)[:16]` equals
`make_shapes(16)` and any one image can be regenerated alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
EXTRA_SHAPES: tuple[str, ...] = ("diamond", "cross")
DIGIT_CLASSES: tuple[str, ...] = tuple(f"digit_{d}" for d in range(10))
KNOWN_CLASSES: tuple[str, ...] = SHAPE_CLASSES + EXTRA_SHAPES + DIGIT_CLASSES

__all__ = ["DIGIT_CLASSES", "EXTRA_SHAPES", "KNOWN_CLASSES", "SHAPE_CLASSES", "make_cluttered_digits",
           "make_digits", "make_shapes", "write_yolo_dataset"]
GLYPH_PARTS: dict[str, tuple[float, float]] = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: nothing is downloaded

    data = load_digits()
    glyphs = np.clip(data.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    return glyphs, data.target.astype(np.int64)


def _upscale(glyph: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(glyph).resize((size, size), Image.BILINEAR))


def make_digits(*, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scikit-learn digits upscaled (bilinear) to size x size RGB, in a seeded order:
    ((N, size, size, 3) uint8, (N,) int64 labels)."""
    glyphs, labels = _digits()
    order = np.random.default_rng(seed).permutation(len(glyphs))
    images = np.stack([_upscale(glyphs[i], size) for i in order])
    return np.repeat(images[..., None], 3, axis=-1), labels[order].copy()


# --- backgrounds ------------------------------------------------------------------------------
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.integers(4)
    if kind == 0:  # flat colour, noise added below
        img = np.broadcast_to(c1, (size, size, 3)).copy()
    else:
        yy, xx = np.mgrid[0:size, 0:size] / size
        angle = rng.uniform(0, math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        if kind == 1:  # linear gradient
            t = (t - t.min()) / max(1e-6, float(np.ptp(t)))
        elif kind == 2:  # stripes
            t = 0.5 + 0.5 * np.sin(2 * math.pi * t * rng.uniform(3, 12) + rng.uniform(0, 2 * math.pi))
        else:  # soft blobs: a coarse random grid upscaled
            grid = (rng.uniform(0, 255, (rng.integers(3, 7),) * 2)).astype(np.uint8)
            t = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float64) / 255
        img = c1 + t[..., None] * (c2 - c1)
    return img + rng.normal(0, rng.uniform(3, 18), img.shape)


def _glyph_pool(part: str) -> np.ndarray:
    """The glyph indices of one part: a fixed shuffle of the 1,797 glyphs cut 70/15/15, so the
    parts never share a handwritten glyph whatever the image seed."""
    if part not in GLYPH_PARTS:
        raise ValueError(f"unknown part {part!r}; one of {', '.join(GLYPH_PARTS)}")
    order = np.random.default_rng(20261202).permutation(len(_digits()[0]))
    lo, hi = GLYPH_PARTS[part]
    return order[int(lo * len(order)):int(hi * len(order))]


def _cluttered_digit(rng: np.random.Generator, size: int, pick: int) -> tuple[np.ndarray, int]:
    glyphs, labels = _digits()
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, math.pi)
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    img = rng.uniform(40, 215) + rng.uniform(-40, 40) * (ramp - ramp.mean())
    img = img + rng.normal(0, rng.uniform(5, 25), (size, size))
    if rng.random() < 0.5:  # a distractor stroke
        canvas = Image.new("L", (size, size), 0)
        ImageDraw.Draw(canvas).line([tuple(rng.uniform(0, size, 2)) for _ in range(2)], fill=255, width=1)
        img[np.asarray(canvas) > 0] = rng.uniform(0, 255)
    side = int(round(rng.uniform(0.6, 0.95) * size))
    glyph = Image.fromarray(glyphs[pick]).resize((side, side), Image.BILINEAR)
    # Blended by the glyph's own grey levels: thresholding the upscaled 8x8 glyph into a mask
    # left blobs that no sub-network learnt to read in 16 epochs (measured: chance level).
    alpha = np.asarray(glyph.rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR), np.float64) / 255
    x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
    region = img[y:y + side, x:x + side]
    ink = np.clip(region.mean() + rng.choice([-1, 1]) * rng.uniform(70, 150), 0, 255)  # darker or lighter
    img[y:y + side, x:x + side] = region * (1 - alpha) + ink * alpha
    grey = np.clip(img, 0, 255).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), int(labels[pick])


def make_cluttered_digits(n: int, *, size: int = 32, seed: int = 0, part: str = "train",
                          ) -> tuple[np.ndarray, np.ndarray]:
    """`n` seeded classification samples, harder than `make_digits`: one scikit-learn glyph per
    image at 60-95 % of the side, anywhere, turned up to 10 degrees, darker or lighter than a
    noisy grey gradient, half of them crossed by a distractor stroke (grey, replicated to RGB).
    `part` ("train", "val", "test") draws the glyphs from a fixed 70/15/15 split of the 1,797, so
    a test image never shows a glyph seen in training. ((n, size, size, 3) uint8, (n,) int64 labels)."""
    pool, part_index = _glyph_pool(part), list(GLYPH_PARTS).index(part)
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, part_index, i])
        rows.append(_cluttered_digit(rng, size, int(rng.choice(pool))))
    images = np.stack([r[0] for r in rows]) if rows else np.zeros((0, size, size, 3), np.uint8)
    return images, np.array([r[1] for r in rows], dtype=np.int64)


# --- objects ----------------------------------------------------------------------------------
def _shape_mask(name: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of the shape drawn (without anti-aliasing) on a side x side canvas."""
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    c, r = (side - 1) / 2, (side - 1) / 2
    rot = rng.uniform(0, 2 * math.pi)

    def polygon(points: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [(c + radius * math.cos(phase + 2 * math.pi * k / points),
                 c + radius * math.sin(phase + 2 * math.pi * k / points)) for k in range(points)]

    if name == "circle":
        draw.ellipse((0, 0, side - 1, side - 1), fill=255)
    elif name == "square":
        draw.polygon(polygon(4, r, rot), fill=255)
    elif name == "triangle":
        draw.polygon(polygon(3, r, rot), fill=255)
    elif name == "diamond":
        draw.polygon([(c, 0), (side - 1, c), (c, side - 1), (0, c)], fill=255)
    elif name == "cross":
        bar = max(2, side // 4)
        draw.rectangle((c - bar / 2, 0, c + bar / 2, side - 1), fill=255)
        draw.rectangle((0, c - bar / 2, side - 1, c + bar / 2), fill=255)
    else:
        raise ValueError(f"unknown class {name!r}; known: {', '.join(KNOWN_CLASSES)}")
    return np.asarray(canvas) > 0


def _digit_mask(digit: int, side: int, rng: np.random.Generator) -> np.ndarray:
    glyphs, labels = _digits()
    pick = rng.choice(np.flatnonzero(labels == digit))
    return _upscale(glyphs[pick], side) > 96


def _object_mask(name: str, side: int, rng: np.random.Generator) -> np.ndarray:
    if name in DIGIT_CLASSES:
        mask = _digit_mask(int(name.rsplit("_", 1)[1]), side, rng)
    else:
        mask = _shape_mask(name, side, rng)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # tight: the box is the mask's extent


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _colour_against(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    colour = rng.uniform(0, 255, 3)
    for _ in range(50):  # keep objects visible against the region under them
        if np.linalg.norm(colour - background) >= 110:
            break
        colour = rng.uniform(0, 255, 3)
    return colour


def _one_image(rng: np.random.Generator, size: int, classes: Sequence[str], max_iou: float,
               min_frac: float, max_frac: float) -> tuple[np.ndarray, np.ndarray]:
    img = _background(rng, size)
    boxes: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(len(classes)))
        side = int(round(rng.uniform(min_frac, max_frac) * size))
        mask = _object_mask(classes[cls], side, rng)
        h, w = mask.shape
        for _ in range(100):
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = np.array([x, y, x + w, y + h], dtype=np.float64)
            if all(_iou(box, b[1:]) <= max_iou for b in boxes):
                break
        else:
            continue  # no room left for this object
        region = img[y:y + h, x:x + w]
        colour = _colour_against(rng, region[mask].mean(0))
        shade = rng.normal(0, 8, (h, w, 1))
        region[mask] = (colour + shade)[mask]
        boxes.append(np.array([cls, *box]))
    out = np.clip(img, 0, 255).round().astype(np.uint8)
    return out, np.array(boxes, dtype=np.float32).reshape(-1, 5)


def make_shapes(n: int, *, size: int = 256, seed: int = 0, classes: Sequence[str] = SHAPE_CLASSES,
                max_iou: float = 0.0, min_frac: float = 0.12, max_frac: float = 0.30,
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n` seeded detection samples: (size x size x 3 uint8 image, (k, 5) float32 boxes
    [cls, x1, y1, x2, y2]) with 1-4 objects of 12-30% of the side each.

    Boxes are in pixel-edge coordinates and exact: x1, y1 is the top-left corner of the first
    object pixel and x2, y2 one past the last (so x2 - x1 is the object's width in pixels).
    `classes` picks and orders the classes (any of KNOWN_CLASSES: shapes and "digit_0".."digit_9");
    `cls` indexes it. Objects overlap with IoU at most `max_iou` (0: they never overlap, so no
    object is hidden).
    """
    classes = tuple(classes)
    unknown = [c for c in classes if c not in KNOWN_CLASSES]
    if not classes or unknown:
        raise ValueError(f"unknown classes {unknown}; known: {', '.join(KNOWN_CLASSES)}")
    if not 0 < min_frac <= max_frac <= 1:
        raise ValueError("need 0 < min_frac <= max_frac <= 1")
    return [_one_image(np.random.default_rng([seed, i]), size, classes, max_iou, min_frac, max_frac)
            for i in range(n)]


def write_yolo_dataset(samples: Sequence[tuple[np.ndarray, np.ndarray]], folder: str | Path,
                       classes: Sequence[str], *,
                       val_samples: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> Path:
    """Write PNG images, YOLO txt labels ("cls xc yc w h", normalised) and a data.yaml that
    Ultralytics reads; returns the data.yaml path. Layout: images/{train,val}, labels/{train,val}.
    Without `val_samples` the val split points at the train images."""
    root = Path(folder).resolve()
    splits = {"train": samples} | ({"val": val_samples} if val_samples is not None else {})
    for split, rows in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i, (image, boxes) in enumerate(rows):
            h, w = image.shape[:2]
            Image.fromarray(image).save(root / "images" / split / f"{i:06d}.png")
            lines = []
            for cls, x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 5):
                lines.append(f"{int(cls)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                             f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
            (root / "labels" / split / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names = "\n".join(f"  {i}: {json.dumps(name)}" for i, name in enumerate(classes))
    val = "images/val" if val_samples is not None else "images/train"
    data = root / "data.yaml"
    data.write_text(f"path: {json.dumps(str(root))}\ntrain: images/train\nval: {val}\n"
                    f"nc: {len(classes)}\nnames:\n{names}\n")
    return data
