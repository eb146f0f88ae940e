"""Cheap, real image features for diversity-based selection when no model exists yet.

Chosen because they need no weights (nothing downloads at run time) and cost one small resize:
  - layout: an 8x8 grey thumbnail (area-averaged), centred, 64 values - what is where;
  - colour: a 4x4 RGB thumbnail, 48 values - where the colours are;
  - palette: a 4x4x4 joint RGB histogram, square-rooted (Hellinger), 64 values;
  - edges: gradient-orientation histograms (8 bins, 2x2 cells, magnitude-weighted) of a 32x32
    grey thumbnail, 32 values - shape, independent of colour.
Each block is L2-normalised (so no block dominates by scale), then the whole vector is, so the
Euclidean distance between two embeddings lies in [0, 2]. Near-duplicates land close together,
which is what k-center and the typicality clustering need. They are computed once, at import,
and stored as float16 next to each image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

VERSION = "pix-hist-hog-v1"
DIM = 64 + 48 + 64 + 32


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def embed(image: Image.Image) -> np.ndarray:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    small = np.asarray(rgb.resize((32, 32), Image.BOX), dtype=np.float32) / 255.0  # 32x32x3
    grey = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    layout = grey.reshape(8, 4, 8, 4).mean(axis=(1, 3)).ravel()
    colour = small.reshape(4, 8, 4, 8, 3).mean(axis=(1, 3)).ravel()
    bins = np.minimum((small * 4).astype(np.int64), 3)
    palette = np.bincount((bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]).ravel(), minlength=64)
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    orientation = np.minimum(((np.arctan2(gy, gx) % np.pi) / np.pi * 8).astype(np.int64), 7)
    edges = np.zeros((2, 2, 8), dtype=np.float32)
    for cy in range(2):
        for cx in range(2):
            cell = (slice(cy * 16, cy * 16 + 16), slice(cx * 16, cx * 16 + 16))
            edges[cy, cx] = np.bincount(orientation[cell].ravel(), weights=magnitude[cell].ravel(), minlength=8)
    parts = [_unit(layout - layout.mean()), _unit(colour - colour.mean()),
             _unit(np.sqrt(palette.astype(np.float32))), _unit(edges.ravel())]
    return _unit(np.concatenate(parts)).astype(np.float32)


def embed_array(array: np.ndarray) -> np.ndarray:
    """The same features for an HxW or HxWx3 uint8 array (benchmarks, tests)."""
    return embed(Image.fromarray(array).convert("RGB"))


def to_bytes(vector: np.ndarray) -> bytes:
    return vector.astype(np.float16).tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float16).astype(np.float32)
