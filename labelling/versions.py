"""Freezing a dataset version: the labelled images as an immutable, content-hashed manifest in
the store (tango.datasets, the contract autonn trains on), split train/val/test stratified by
class and seeded, so the same labels and seed always give the same split and the same hash."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from labelling.catalog import classes_of, get_dataset
from labelling.errors import Conflict, Invalid, NotFound
from labelling.records import T, row_dict
from labelling.schemas import VersionCreate, VersionPublic
from tango.datasets import content_hash, load_version, manifest_key, save_version
from tango.db import Database
from tango.jobs import utcnow
from tango.spec import BoxLabel, DatasetItem, DatasetManifest
from tango.store import ArtifactExists, Store


def assign_splits(strata: dict[str, str], *, seed: int, val: float, test: float) -> dict[str, str]:
    """sha256 -> split. Within each stratum, images are ordered by a seeded hash of their content
    and the first round(n*test) go to test, the next round(n*val) to val, the rest to train."""
    groups: dict[str, list[str]] = defaultdict(list)
    for sha, stratum in strata.items():
        groups[stratum].append(sha)
    out = {}
    for stratum in sorted(groups):
        shas = sorted(groups[stratum], key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
        n = len(shas)
        n_test, n_val = round(n * test), round(n * val)
        while n_test + n_val >= n and n_test + n_val > 0:  # keep at least one for train
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        for i, sha in enumerate(shas):
            out[sha] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def build_manifest(db: Database, *, dataset_id: str, version: str, body: VersionCreate) -> DatasetManifest:
    dataset = get_dataset(db, dataset_id)
    classes = classes_of(db, dataset_id)
    if not classes:
        raise Invalid(f"dataset {dataset_id!r} has no classes yet; add classes and labels before freezing")
    index = {c["id"]: i for i, c in enumerate(classes)}
    img, lab = T.images, T.labels
    query = (select(img.c.key, img.c.sha256, img.c.width, img.c.height, lab.c.value)
             .select_from(img.join(lab, lab.c.image_id == img.c.id)).where(img.c.dataset_id == dataset_id))
    query = query.where(lab.c.review_state == "approved") if body.include == "approved" else \
        query.where(lab.c.review_state != "rejected")
    with db.begin() as conn:
        rows = conn.execute(query).all()
    if not rows:
        raise Invalid(f"dataset {dataset_id!r} has no {body.include} images to freeze")
    # Detect images are stratified by their rarest class, so rare classes reach every split.
    frequency = Counter(c for r in rows for c in {b["class_id"] for b in r.value.get("boxes", [])})

    def stratum(value: dict) -> str:
        if "class_id" in value:
            return str(index[value["class_id"]])
        present = {b["class_id"] for b in value["boxes"]}
        return str(index[min(present, key=lambda c: (frequency[c], index[c]))]) if present else "empty"

    splits = assign_splits({r.sha256: stratum(r.value) for r in rows}, seed=body.seed, val=body.val, test=body.test)
    items = []
    for r in sorted(rows, key=lambda r: r.sha256):
        common = dict(key=r.key, sha256=r.sha256, split=splits[r.sha256], width=r.width, height=r.height)
        if dataset["task"] == "classify":
            items.append(DatasetItem(label=index[r.value["class_id"]], **common))
        else:
            items.append(DatasetItem(boxes=[BoxLabel(cls=index[b["class_id"]], x1=b["x1"], y1=b["y1"], x2=b["x2"],
                                                     y2=b["y2"]) for b in r.value["boxes"]], **common))
    return DatasetManifest(dataset_id=dataset_id, version=version, task=dataset["task"],
                           classes=[c["name"] for c in classes], items=items)


def _counts(manifest: DatasetManifest) -> dict[str, Any]:
    per_split = Counter(i.split for i in manifest.items)
    per_class: Counter = Counter()
    for item in manifest.items:
        for cls in ([item.label] if manifest.task == "classify" else {b.cls for b in item.boxes}):
            per_class[manifest.classes[cls]] += 1
    return {"items": len(manifest.items), **{s: per_split.get(s, 0) for s in ("train", "val", "test")},
            "per_class": dict(per_class)}


def freeze(db: Database, store: Store, *, dataset_id: str, body: VersionCreate, user: str) -> VersionPublic:
    get_dataset(db, dataset_id)
    with db.begin() as conn:
        n = conn.execute(select(func.count()).select_from(T.versions)
                         .where(T.versions.c.dataset_id == dataset_id)).scalar_one()
    version = body.version or f"v{n + 1}"
    if _find(db, dataset_id, version) is not None:
        raise Conflict(f"dataset {dataset_id!r} already has a version {version!r}; versions are immutable")
    manifest = build_manifest(db, dataset_id=dataset_id, version=version, body=body)
    try:
        manifest = save_version(store, manifest)
    except ArtifactExists:
        # Written by an earlier attempt that died before its row: adopt it only if identical.
        stored = load_version(store, dataset_id, version)
        if stored.content_hash != content_hash(manifest):
            raise Conflict(f"the store already holds a different {dataset_id}/{version}") from None
        manifest = stored
    try:
        with db.begin() as conn:
            conn.execute(T.versions.insert().values(
                dataset_id=dataset_id, version=version, content_hash=manifest.content_hash,
                manifest_key=manifest_key(dataset_id, version), counts=_counts(manifest),
                params=body.model_dump(mode="json", exclude={"version"}), created_by=user, created_at=utcnow()))
    except IntegrityError:
        raise Conflict(f"dataset {dataset_id!r} already has a version {version!r}") from None
    return get_version(db, store, dataset_id=dataset_id, version=version)


def _find(db: Database, dataset_id: str, version: str) -> dict | None:
    with db.begin() as conn:
        row = conn.execute(select(T.versions).where(T.versions.c.dataset_id == dataset_id,
                                                    T.versions.c.version == version)).first()
    return row_dict(row) if row else None


def _public(row: dict, store: Store) -> VersionPublic:
    return VersionPublic(dataset_id=row["dataset_id"], version=row["version"], content_hash=row["content_hash"],
                         manifest_url=store.url_for(row["manifest_key"]), counts=row["counts"],
                         params=row["params"], created_by=row["created_by"], created_at=row["created_at"])


def get_version(db: Database, store: Store, *, dataset_id: str, version: str) -> VersionPublic:
    row = _find(db, dataset_id, version)
    if row is None:
        raise NotFound(f"dataset {dataset_id!r} has no version {version!r}")
    return _public(row, store)


def list_versions(db: Database, store: Store, *, dataset_id: str) -> list[VersionPublic]:
    get_dataset(db, dataset_id)
    with db.begin() as conn:
        rows = conn.execute(select(T.versions).where(T.versions.c.dataset_id == dataset_id)
                            .order_by(T.versions.c.created_at)).all()
    return [_public(row_dict(r), store) for r in rows]
