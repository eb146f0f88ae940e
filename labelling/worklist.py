"""What a person labels next: the active-learning queue (the latest `select` job's ranking) first,
then the rest of the unlabelled pool; and images presented with their label and suggestions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select

from labelling.annotations import label_public
from labelling.catalog import classes_of, get_dataset, get_image
from labelling.records import T, row_dict
from labelling.schemas import ImagePublic, NextPublic, QueueItem, QueuePublic
from labelling.suggestions import open_suggestions, suggestion_public
from tango.db import Database


def images_public(db: Database, rows: list[dict[str, Any]], dataset_id: str) -> list[ImagePublic]:
    classes = classes_of(db, dataset_id)
    names = {c["id"]: c["name"] for c in classes}
    ids = [r["id"] for r in rows]
    with db.begin() as conn:
        labels = {r.image_id: row_dict(r) for r in conn.execute(select(T.labels).where(T.labels.c.image_id.in_(ids)))}
    suggestions = open_suggestions(db, image_ids=ids)
    return [ImagePublic(id=r["id"], dataset_id=dataset_id, sha256=r["sha256"], width=r["width"], height=r["height"],
                        source_name=r["source_name"], created_at=r["created_at"],
                        content_url=f"/datasets/{dataset_id}/images/{r['id']}/content",
                        label=label_public(labels.get(r["id"]), classes),
                        suggestions=[suggestion_public(s, names) for s in suggestions.get(r["id"], [])])
            for r in rows]


def latest_selection(db: Database, dataset_id: str) -> str | None:
    sel = T.selections
    with db.begin() as conn:
        row = conn.execute(select(sel.c.job_id).where(sel.c.dataset_id == dataset_id)
                           .order_by(sel.c.created_at.desc()).limit(1)).first()
    return row.job_id if row else None


def queue(db: Database, *, dataset_id: str) -> QueuePublic:
    get_dataset(db, dataset_id)
    job_id = latest_selection(db, dataset_id)
    if job_id is None:
        return QueuePublic(job_id=None, strategy=None, items=[])
    sel, lab = T.selections, T.labels
    with db.begin() as conn:
        rows = conn.execute(select(sel, lab.c.image_id.label("labelled"))
                            .select_from(sel.outerjoin(lab, lab.c.image_id == sel.c.image_id))
                            .where(sel.c.job_id == job_id).order_by(sel.c.rank)).all()
    return QueuePublic(job_id=job_id, strategy=rows[0].strategy if rows else None,
                       items=[QueueItem(image_id=r.image_id, rank=r.rank, score=r.score,
                                        labelled=r.labelled is not None) for r in rows])


def _next_in_queue(db: Database, dataset_id: str, after: str | None) -> tuple[dict | None, int]:
    job_id = latest_selection(db, dataset_id)
    if job_id is None:
        return None, 0
    sel, img, lab = T.selections, T.images, T.labels
    base = (select(img, sel.c.rank).select_from(sel.join(img, img.c.id == sel.c.image_id)
                                                .outerjoin(lab, lab.c.image_id == sel.c.image_id))
            .where(sel.c.job_id == job_id, lab.c.image_id.is_(None)))
    with db.begin() as conn:
        remaining = conn.execute(select(func.count()).select_from(base.subquery())).scalar_one()
        if after:
            cursor = conn.execute(select(sel.c.rank).where(sel.c.job_id == job_id, sel.c.image_id == after)).first()
            if cursor is not None:
                base = base.where(sel.c.rank > cursor.rank)
        row = conn.execute(base.order_by(sel.c.rank).limit(1)).first()
    return (row_dict(row) if row else None), remaining


def _next_in_pool(db: Database, dataset_id: str, after: str | None) -> tuple[dict | None, int]:
    img, lab = T.images, T.labels
    base = (select(img).select_from(img.outerjoin(lab, lab.c.image_id == img.c.id))
            .where(img.c.dataset_id == dataset_id, lab.c.image_id.is_(None)))
    with db.begin() as conn:
        remaining = conn.execute(select(func.count()).select_from(base.subquery())).scalar_one()
        if after:
            cursor = conn.execute(select(img.c.created_at, img.c.id).where(img.c.id == after)).first()
            if cursor is not None:
                base = base.where(or_(img.c.created_at > cursor.created_at,
                                      and_(img.c.created_at == cursor.created_at, img.c.id > cursor.id)))
        row = conn.execute(base.order_by(img.c.created_at, img.c.id).limit(1)).first()
    return (row_dict(row) if row else None), remaining


def next_image(db: Database, *, dataset_id: str, source: str = "auto", after: str | None = None) -> NextPublic:
    """The next unlabelled image: from the queue, from the pool, or (auto) the queue while it lasts.
    `after` (the image on screen, e.g. skipped) moves past it in the same order."""
    get_dataset(db, dataset_id)
    if after:
        get_image(db, dataset_id=dataset_id, image_id=after)
    if source in ("auto", "queue"):
        row, remaining = _next_in_queue(db, dataset_id, after)
        if row is not None or source == "queue":
            image = images_public(db, [row], dataset_id)[0] if row else None
            return NextPublic(image=image, source="queue", remaining=remaining)
    row, remaining = _next_in_pool(db, dataset_id, after)
    return NextPublic(image=images_public(db, [row], dataset_id)[0] if row else None, source="pool",
                      remaining=remaining)
