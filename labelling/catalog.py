"""Datasets, their classes and their images: creation, lookup, listing, counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from labelling.errors import Conflict, Invalid, NotFound
from labelling.records import T, row_dict
from labelling.schemas import ClassPublic, DatasetCounts, DatasetCreate, DatasetPublic
from tango.db import Database
from tango.jobs import utcnow


def create_dataset(db: Database, *, body: DatasetCreate) -> None:
    now = utcnow()
    try:
        with db.begin() as conn:
            conn.execute(T.datasets.insert().values(id=body.id, name=body.name, task=body.task,
                                                    created_at=now, updated_at=now))
            for name in body.classes:
                conn.execute(T.classes.insert().values(dataset_id=body.id, name=name, created_at=now))
    except IntegrityError:
        raise Conflict(f"a dataset {body.id!r} already exists; pick another id") from None


def get_dataset(db: Database, dataset_id: str) -> dict[str, Any]:
    with db.begin() as conn:
        row = conn.execute(select(T.datasets).where(T.datasets.c.id == dataset_id)).first()
    if row is None:
        raise NotFound(f"no dataset {dataset_id!r}; create it with POST /datasets")
    return row_dict(row)


def list_dataset_ids(db: Database) -> list[str]:
    with db.begin() as conn:
        return [r.id for r in conn.execute(select(T.datasets.c.id).order_by(T.datasets.c.created_at))]


def classes_of(db: Database, dataset_id: str) -> list[dict[str, Any]]:
    """The dataset's classes in index order (creation order)."""
    with db.begin() as conn:
        rows = conn.execute(select(T.classes).where(T.classes.c.dataset_id == dataset_id)
                            .order_by(T.classes.c.id)).all()
    return [row_dict(r) for r in rows]


def class_usage(db: Database, dataset_id: str) -> dict[int, int]:
    """How many labels use each class id (a detect image counts once per class it has)."""
    usage: dict[int, int] = {}
    with db.begin() as conn:
        for (value,) in conn.execute(select(T.labels.c.value).where(T.labels.c.dataset_id == dataset_id)):
            ids = {value["class_id"]} if "class_id" in value else {b["class_id"] for b in value["boxes"]}
            for cid in ids:
                usage[cid] = usage.get(cid, 0) + 1
    return usage


def class_public(db: Database, dataset_id: str) -> list[ClassPublic]:
    usage = class_usage(db, dataset_id)
    return [ClassPublic(id=c["id"], name=c["name"], index=i, count=usage.get(c["id"], 0))
            for i, c in enumerate(classes_of(db, dataset_id))]


def add_class(db: Database, *, dataset_id: str, name: str) -> ClassPublic:
    get_dataset(db, dataset_id)
    try:
        with db.begin() as conn:
            conn.execute(T.classes.insert().values(dataset_id=dataset_id, name=name, created_at=utcnow()))
    except IntegrityError:
        raise Conflict(f"dataset {dataset_id!r} already has a class {name!r}") from None
    return next(c for c in class_public(db, dataset_id) if c.name == name)


def rename_class(db: Database, *, dataset_id: str, class_id: int, name: str) -> ClassPublic:
    resolve_class(classes_of(db, dataset_id), class_id=class_id)
    try:
        with db.begin() as conn:
            conn.execute(T.classes.update().where(T.classes.c.id == class_id).values(name=name))
    except IntegrityError:
        raise Conflict(f"dataset {dataset_id!r} already has a class {name!r}") from None
    return next(c for c in class_public(db, dataset_id) if c.id == class_id)


def delete_class(db: Database, *, dataset_id: str, class_id: int) -> None:
    resolve_class(classes_of(db, dataset_id), class_id=class_id)
    used = class_usage(db, dataset_id).get(class_id, 0)
    if used:
        raise Conflict(f"class {class_id} is used by {used} label(s); relabel or clear them first")
    with db.begin() as conn:
        conn.execute(T.classes.delete().where(T.classes.c.id == class_id))


def resolve_class(classes: list[dict[str, Any]], *, class_id: int | None = None,
                  class_name: str | None = None) -> dict[str, Any]:
    for c in classes:
        if (class_id is not None and c["id"] == class_id) or (class_name is not None and c["name"] == class_name):
            return c
    known = ", ".join(f"{c['id']}={c['name']}" for c in classes[:50]) or "none yet"
    wanted = f"id {class_id}" if class_id is not None else f"name {class_name!r}"
    raise Invalid(f"the dataset has no class with {wanted}; its classes are: {known}")


def counts(db: Database, dataset_id: str) -> DatasetCounts:
    with db.begin() as conn:
        images = conn.execute(select(func.count()).select_from(T.images)
                              .where(T.images.c.dataset_id == dataset_id)).scalar_one()
        by_review = dict(conn.execute(select(T.labels.c.review_state, func.count())
                                      .where(T.labels.c.dataset_id == dataset_id)
                                      .group_by(T.labels.c.review_state)).all())
        open_suggestions = conn.execute(select(func.count()).select_from(T.suggestions).where(
            T.suggestions.c.dataset_id == dataset_id, T.suggestions.c.state == "open")).scalar_one()
    labelled = sum(by_review.values())
    return DatasetCounts(images=images, labelled=labelled, unlabelled=images - labelled,
                         approved=by_review.get("approved", 0), rejected=by_review.get("rejected", 0),
                         open_suggestions=open_suggestions)


def dataset_public(db: Database, dataset_id: str) -> DatasetPublic:
    row = get_dataset(db, dataset_id)
    return DatasetPublic(id=row["id"], name=row["name"], task=row["task"],
                         classes=class_public(db, dataset_id), counts=counts(db, dataset_id),
                         created_at=row["created_at"])


def get_image(db: Database, *, dataset_id: str, image_id: str) -> dict[str, Any]:
    with db.begin() as conn:
        row = conn.execute(select(T.images).where(T.images.c.id == image_id,
                                                  T.images.c.dataset_id == dataset_id)).first()
    if row is None:
        raise NotFound(f"dataset {dataset_id!r} has no image {image_id!r}")
    return row_dict(row)


IMAGE_FILTERS = ("all", "unlabelled", "labelled", "unreviewed", "approved", "rejected")


def list_images(db: Database, *, dataset_id: str, state: str = "all", limit: int = 50,
                offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    img, lab = T.images, T.labels
    query = select(img).select_from(img.outerjoin(lab, lab.c.image_id == img.c.id)).where(
        img.c.dataset_id == dataset_id)
    if state == "unlabelled":
        query = query.where(lab.c.image_id.is_(None))
    elif state == "labelled":
        query = query.where(lab.c.image_id.is_not(None))
    elif state in ("unreviewed", "approved", "rejected"):
        query = query.where(lab.c.review_state == state)
    total_q = select(func.count()).select_from(query.subquery())
    with db.begin() as conn:
        rows = conn.execute(query.order_by(img.c.created_at, img.c.id).limit(limit).offset(offset)).all()
        total = conn.execute(total_q).scalar_one()
    return [row_dict(r) for r in rows], total
