"""Reading and writing frozen dataset versions in the store (the labelling → autonn contract)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable

from tango.spec import BoxLabel, DatasetItem, DatasetManifest, Split
from tango.store import ArtifactExists, Store


def manifest_key(dataset_id: str, version: str) -> str:
    return f"datasets/{dataset_id}/{version}/manifest.json"


def image_key(dataset_id: str, sha256: str, ext: str) -> str:
    # Content-addressed: versions share unchanged images, and a re-import never duplicates them.
    return f"datasets/{dataset_id}/images/{sha256}.{ext.lstrip('.').lower()}"


def content_hash(manifest: DatasetManifest) -> str:
    """Stable over everything that defines the data (classes, items, labels), not over ids."""
    body = {"task": manifest.task, "classes": manifest.classes,
            "items": sorted((i.model_dump(exclude={"key"}) for i in manifest.items),
                            key=lambda d: (d["sha256"], d["split"]))}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_version(store: Store, manifest: DatasetManifest) -> DatasetManifest:
    """Write a manifest once, with its content hash; the images must already be in the store."""
    missing = [i.key for i in manifest.items if not store.exists(i.key)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) of the manifest are not in the store, e.g. {missing[0]}")
    manifest = manifest.model_copy(update={"content_hash": content_hash(manifest)})
    store.put_bytes(manifest_key(manifest.dataset_id, manifest.version),
                    manifest.model_dump_json(indent=1).encode())
    return manifest


def load_version(store: Store, dataset_id: str, version: str) -> DatasetManifest:
    return DatasetManifest.model_validate_json(store.get_bytes(manifest_key(dataset_id, version)))


def put_image(store: Store, dataset_id: str, data: bytes, ext: str) -> tuple[str, str]:
    sha = hashlib.sha256(data).hexdigest()
    key = image_key(dataset_id, sha, ext)
    try:
        store.put_bytes(key, data)
    except ArtifactExists:
        pass
    return key, sha


def version_from_arrays(store: Store, *, dataset_id: str, version: str, task: str, classes: list[str],
                        samples: Iterable[tuple], splits: Iterable[Split]) -> DatasetManifest:
    """Freeze in-memory samples as a dataset version: (HxWx3 uint8, label) for classify,
    (HxWx3 uint8, boxes (k,5) [cls,x1,y1,x2,y2]) for detect. Used by examples, benchmarks and
    tests; people's data arrives through the labelling service instead."""
    from PIL import Image

    items = []
    for (image, target), split in zip(samples, splits, strict=True):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        key, sha = put_image(store, dataset_id, buf.getvalue(), "png")
        h, w = image.shape[:2]
        if task == "classify":
            items.append(DatasetItem(key=key, sha256=sha, split=split, width=w, height=h, label=int(target)))
        else:
            boxes = [BoxLabel(cls=int(b[0]), x1=float(b[1]), y1=float(b[2]), x2=float(b[3]), y2=float(b[4]))
                     for b in target]
            items.append(DatasetItem(key=key, sha256=sha, split=split, width=w, height=h, boxes=boxes))
    return save_version(store, DatasetManifest(dataset_id=dataset_id, version=version, task=task,
                                               classes=classes, items=items))


def split_for(index: int, n: int, *, val: float = 0.15, test: float = 0.15) -> Split:
    """Deterministic split by position (callers shuffle first, with a seed)."""
    frac = index / max(1, n)
    return "test" if frac < test else "val" if frac < test + val else "train"
