"""Frozen dataset versions from the store as in-memory tensors and loaders for training."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from autonn.spaces.base import SearchSpace
from tango.datasets import load_version
from tango.spec import DatasetManifest
from tango.store import Store


@dataclass
class Loaders:
    task: str
    classes: list[str]
    train: DataLoader
    val: DataLoader
    calib: DataLoader
    test: DataLoader | None
    manifest_hash: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def decode_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def classification_tensors(images: list[np.ndarray], labels: list[int], size: int) -> TensorDataset:
    """uint8 NCHW images at `size` (the space's largest input; smaller sub-networks get the batch
    resized on the fly) and int64 labels."""
    stack = np.stack([_resize(im, size) for im in images]) if images else np.zeros((0, size, size, 3), np.uint8)
    return TensorDataset(torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous(),
                         torch.as_tensor(labels, dtype=torch.int64))


class ToFloat:
    """Collate uint8 images to float [0, 1] only per batch, keeping the dataset 4x smaller."""

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([b[0] for b in batch]).float().div_(255.0)
        return images, torch.stack([b[1] for b in batch])


def _split(manifest: DatasetManifest, store: Store, split: str) -> list[tuple[np.ndarray, Any]]:
    out = []
    for item in manifest.items:
        if item.split != split:
            continue
        image = decode_rgb(store.get_bytes(item.key))
        if manifest.task == "classify":
            out.append((image, item.label))
        else:
            boxes = np.array([[b.cls, b.x1, b.y1, b.x2, b.y2] for b in item.boxes], dtype=np.float32).reshape(-1, 5)
            out.append((image, boxes))
    return out


def make_loaders(*, samples: dict[str, list[tuple[np.ndarray, Any]]], task: str, classes: list[str],
                 space: SearchSpace, batch_size: int, train_sampler: Sampler | None = None,
                 manifest_hash: str = "") -> Loaders:
    size = space.input_size(space.largest())
    if task == "classify":
        sets: dict[str, Dataset] = {
            split: classification_tensors([s[0] for s in rows], [int(s[1]) for s in rows], size)
            for split, rows in samples.items()}
        collate: Any = ToFloat()
    else:
        from autonn.spaces.yolo import DetectionDataset, collate_detection

        sets = {split: DetectionDataset(rows, size=size) for split, rows in samples.items()}
        collate = collate_detection
    if len(sets["train"]) == 0 or len(sets["val"]) == 0:
        raise ValueError("the dataset version needs images in both its train and val splits")

    def loader(split: str, **kw: Any) -> DataLoader:
        return DataLoader(sets[split], batch_size=batch_size, collate_fn=collate, **kw)

    test = loader("test") if "test" in sets and len(sets["test"]) else None
    return Loaders(task=task, classes=classes,
                   train=loader("train", sampler=train_sampler, shuffle=train_sampler is None, drop_last=True)
                   if len(sets["train"]) >= 2 * batch_size else loader("train", sampler=train_sampler,
                                                                       shuffle=train_sampler is None),
                   val=loader("val"), calib=loader("train", shuffle=False), test=test,
                   manifest_hash=manifest_hash)


def loaders_from_store(*, store: Store, dataset_id: str, version: str, space: SearchSpace, batch_size: int,
                       train_sampler_factory: Any = None) -> Loaders:
    manifest = load_version(store, dataset_id, version)
    if manifest.task != space.task:
        raise ValueError(f"dataset {dataset_id}/{version} is a {manifest.task} dataset; "
                         f"search space {space.name} is for {space.task}")
    samples = {split: _split(manifest, store, split) for split in ("train", "val", "test")}
    sampler = train_sampler_factory(len(samples["train"])) if train_sampler_factory else None
    return make_loaders(samples=samples, task=manifest.task, classes=manifest.classes, space=space,
                        batch_size=batch_size, train_sampler=sampler, manifest_hash=manifest.content_hash)
