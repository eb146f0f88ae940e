"""Model suggestions (from pre-annotation): a person accepts one as the label, or rejects it, or
saves their own label (which supersedes it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from labelling.annotations import current, label_public, new_operation, supersede_suggestions, write_label
from labelling.catalog import classes_of, get_dataset
from labelling.errors import Conflict, NotFound
from labelling.records import T, row_dict
from labelling.schemas import BoxPublic, LabelPublic, SuggestionPublic
from tango.db import Database
from tango.jobs import utcnow


def suggestion_public(row: dict, names: dict[int, str]) -> SuggestionPublic:
    value = row["value"]
    common = {k: row[k] for k in ("id", "image_id", "model_id", "job_id", "score", "state", "created_at")}
    if "class_id" in value:
        return SuggestionPublic(class_id=value["class_id"], class_name=names.get(value["class_id"], "?"), **common)
    return SuggestionPublic(boxes=[BoxPublic(class_name=names.get(b["class_id"], "?"), **b) for b in value["boxes"]],
                            **common)


def list_suggestions(db: Database, *, dataset_id: str, state: str | None = "open", image_id: str | None = None,
                     limit: int = 50, offset: int = 0) -> tuple[list[SuggestionPublic], int]:
    get_dataset(db, dataset_id)
    s = T.suggestions
    query = select(s).where(s.c.dataset_id == dataset_id)
    if state:
        query = query.where(s.c.state == state)
    if image_id:
        query = query.where(s.c.image_id == image_id)
    with db.begin() as conn:
        total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = conn.execute(query.order_by(s.c.created_at.desc(), s.c.id).limit(limit).offset(offset)).all()
    names = {c["id"]: c["name"] for c in classes_of(db, dataset_id)}
    return [suggestion_public(row_dict(r), names) for r in rows], total


def _label_from(value: dict) -> dict:
    if "class_id" in value:
        return {"class_id": value["class_id"]}
    return {"boxes": [{k: b[k] for k in ("class_id", "x1", "y1", "x2", "y2")} for b in value["boxes"]]}


def _accept(conn: Connection, *, row: dict, dataset_id: str, user: str, operation: str) -> None:
    write_label(conn, dataset_id=dataset_id, image_id=row["image_id"], user=user, action="accept_suggestion",
                operation=operation, after={"value": _label_from(row["value"]), "source": f"suggestion:{row['id']}",
                                            "review_state": "unreviewed"})
    supersede_suggestions(conn, row["image_id"], user)
    conn.execute(T.suggestions.update().where(T.suggestions.c.id == row["id"])
                 .values(state="accepted", decided_by=user, decided_at=utcnow()))


def _classes_exist(value: dict, class_ids: set[int]) -> bool:
    ids = {value["class_id"]} if "class_id" in value else {b["class_id"] for b in value["boxes"]}
    return ids <= class_ids


def accept_in(conn: Connection, *, dataset: dict, image_id: str, user: str, operation: str,
              min_score: float) -> str | None:
    """Accept the image's newest open suggestion; returns why not, or None when accepted."""
    s = T.suggestions
    row = conn.execute(select(s).where(s.c.image_id == image_id, s.c.state == "open")
                       .order_by(s.c.created_at.desc()).limit(1)).first()
    if row is None:
        return "has no open suggestion"
    row = row_dict(row)
    if row["score"] < min_score:
        return f"its suggestion's score {row['score']:.3f} is below {min_score}"
    class_ids = {r.id for r in conn.execute(select(T.classes.c.id).where(T.classes.c.dataset_id == dataset["id"]))}
    if not _classes_exist(row["value"], class_ids):
        return "its suggestion names a class the dataset no longer has"
    _accept(conn, row=row, dataset_id=dataset["id"], user=user, operation=operation)
    return None


def _get(conn: Connection, dataset_id: str, suggestion_id: str) -> dict:
    row = conn.execute(select(T.suggestions).where(T.suggestions.c.id == suggestion_id,
                                                   T.suggestions.c.dataset_id == dataset_id)).first()
    if row is None:
        raise NotFound(f"dataset {dataset_id!r} has no suggestion {suggestion_id!r}")
    row = row_dict(row)
    if row["state"] != "open":
        raise Conflict(f"suggestion {suggestion_id} is already {row['state']}")
    return row


def accept_suggestion(db: Database, *, dataset_id: str, suggestion_id: str, user: str) -> LabelPublic:
    get_dataset(db, dataset_id)
    classes = classes_of(db, dataset_id)
    with db.begin() as conn:
        row = _get(conn, dataset_id, suggestion_id)
        if not _classes_exist(row["value"], {c["id"] for c in classes}):
            raise Conflict("the suggestion names a class the dataset no longer has; label the image yourself")
        _accept(conn, row=row, dataset_id=dataset_id, user=user, operation=new_operation())
        label = current(conn, row["image_id"])
    return label_public(label, classes)


def reject_suggestion(db: Database, *, dataset_id: str, suggestion_id: str, user: str) -> None:
    with db.begin() as conn:
        _get(conn, dataset_id, suggestion_id)
        conn.execute(T.suggestions.update().where(T.suggestions.c.id == suggestion_id)
                     .values(state="rejected", decided_by=user, decided_at=utcnow()))


def open_suggestions(db: Database, *, image_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if not image_ids:
        return out
    s = T.suggestions
    with db.begin() as conn:
        for r in conn.execute(select(s).where(s.c.image_id.in_(image_ids), s.c.state == "open")
                              .order_by(s.c.created_at.desc())):
            out.setdefault(r.image_id, []).append(row_dict(r))
    return out
