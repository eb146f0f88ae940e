"""Labels as people (and imports and accepted suggestions) write them: validation against the
dataset's task and classes, one current label per image, and a history table that records every
change as before/after snapshots, so undo restores exactly what was there."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, select

from labelling.catalog import classes_of, get_dataset, get_image, resolve_class
from labelling.errors import Conflict, Invalid
from labelling.records import T, row_dict
from labelling.schemas import BoxPublic, HistoryPublic, LabelCreate, LabelPublic, UndoPublic
from tango.db import Database
from tango.jobs import utcnow

# Undo walks back a person's own edits; imports and undos themselves are history, not undoable.
UNDOABLE = frozenset({"save", "clear", "review", "bulk_set_class", "bulk_clear", "bulk_review",
                      "accept_suggestion"})
BOX_TOLERANCE_PX = 0.5


def new_operation() -> str:
    return uuid.uuid4().hex


def check_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> tuple[float, ...]:
    """The box clipped to the image if it lies within half a pixel of it; ValueError otherwise."""
    t = BOX_TOLERANCE_PX
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has no area")
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        raise ValueError(f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {width}x{height} image")
    return max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)


def label_value(*, task: str, classes: list[dict], width: int, height: int, body: LabelCreate) -> dict:
    if task == "classify":
        if body.boxes is not None or (body.class_id is None and body.class_name is None):
            raise Invalid("a classify dataset takes a label of class_id or class_name, not boxes")
        return {"class_id": resolve_class(classes, class_id=body.class_id, class_name=body.class_name)["id"]}
    if body.boxes is None or body.class_id is not None or body.class_name is not None:
        raise Invalid("a detect dataset takes a label of boxes ([] when there is nothing to box)")
    boxes = []
    for n, box in enumerate(body.boxes):
        cid = resolve_class(classes, class_id=box.class_id, class_name=box.class_name)["id"]
        try:
            x1, y1, x2, y2 = check_box(box.x1, box.y1, box.x2, box.y2, width, height)
        except ValueError as exc:
            raise Invalid(f"boxes.{n}: {exc}") from None
        boxes.append({"class_id": cid, "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    return {"boxes": boxes}


def snapshot(row: dict | None) -> dict | None:
    if row is None:
        return None
    return {"value": row["value"], "source": row["source"], "review_state": row["review_state"]}


def current(conn: Connection, image_id: str) -> dict | None:
    row = conn.execute(select(T.labels).where(T.labels.c.image_id == image_id)).first()
    return row_dict(row) if row else None


def write_label(conn: Connection, *, dataset_id: str, image_id: str, after: dict | None, user: str,
                action: str, operation: str) -> None:
    """Make `after` (a snapshot, or None for no label) the image's label and record the change."""
    now = utcnow()
    row = current(conn, image_id)
    before = snapshot(row)
    if after is None:
        if row is not None:
            conn.execute(T.labels.delete().where(T.labels.c.image_id == image_id))
    else:
        reviewed = (before or {}).get("review_state") != after["review_state"]
        values = dict(value=after["value"], source=after["source"], review_state=after["review_state"])
        if row is None or reviewed:
            values.update(reviewed_by=user if after["review_state"] != "unreviewed" else None,
                          reviewed_at=now if after["review_state"] != "unreviewed" else None)
        if row is None or before["value"] != after["value"] or before["source"] != after["source"]:
            values.update(updated_by=user, updated_at=now)
        if row is None:
            conn.execute(T.labels.insert().values(image_id=image_id, dataset_id=dataset_id, revision=1, **values))
        else:
            conn.execute(T.labels.update().where(T.labels.c.image_id == image_id)
                         .values(revision=row["revision"] + 1, **values))
    conn.execute(T.history.insert().values(dataset_id=dataset_id, image_id=image_id, operation=operation,
                                           action=action, before=before, after=after, user=user, at=now,
                                           undone=False))


def supersede_suggestions(conn: Connection, image_id: str, user: str) -> None:
    conn.execute(T.suggestions.update().where(T.suggestions.c.image_id == image_id,
                                              T.suggestions.c.state == "open")
                 .values(state="superseded", decided_by=user, decided_at=utcnow()))


def label_public(row: dict | None, classes: list[dict]) -> LabelPublic | None:
    if row is None:
        return None
    names = {c["id"]: c["name"] for c in classes}
    value = row["value"]
    common = dict(source=row["source"], revision=row["revision"], updated_by=row["updated_by"],
                  updated_at=row["updated_at"], review_state=row["review_state"],
                  reviewed_by=row.get("reviewed_by"), reviewed_at=row.get("reviewed_at"))
    if "class_id" in value:
        return LabelPublic(class_id=value["class_id"], class_name=names.get(value["class_id"], "?"), **common)
    return LabelPublic(boxes=[BoxPublic(class_name=names.get(b["class_id"], "?"), **b) for b in value["boxes"]],
                       **common)


def get_label(db: Database, *, dataset_id: str, image_id: str) -> LabelPublic | None:
    get_image(db, dataset_id=dataset_id, image_id=image_id)
    with db.begin() as conn:
        row = current(conn, image_id)
    return label_public(row, classes_of(db, dataset_id))


def save_label(db: Database, *, dataset_id: str, image_id: str, body: LabelCreate, user: str) -> LabelPublic:
    dataset = get_dataset(db, dataset_id)
    image = get_image(db, dataset_id=dataset_id, image_id=image_id)
    classes = classes_of(db, dataset_id)
    value = label_value(task=dataset["task"], classes=classes, width=image["width"], height=image["height"],
                        body=body)
    with db.begin() as conn:
        row = current(conn, image_id)
        if body.expected_revision is not None and (row["revision"] if row else 0) != body.expected_revision:
            raise Conflict(f"image {image_id} is at label revision {row['revision'] if row else 0}, not "
                           f"{body.expected_revision}: {row['updated_by'] if row else 'someone'} changed it; "
                           "reload it and save again")
        write_label(conn, dataset_id=dataset_id, image_id=image_id, user=user, action="save",
                    operation=new_operation(), after={"value": value, "source": "human",
                                                      "review_state": "unreviewed"})
        supersede_suggestions(conn, image_id, user)
        row = current(conn, image_id)
    return label_public(row, classes)


def clear_label(db: Database, *, dataset_id: str, image_id: str, user: str) -> None:
    get_image(db, dataset_id=dataset_id, image_id=image_id)
    with db.begin() as conn:
        if current(conn, image_id) is not None:
            write_label(conn, dataset_id=dataset_id, image_id=image_id, after=None, user=user, action="clear",
                        operation=new_operation())


def review_label(db: Database, *, dataset_id: str, image_id: str, state: str, user: str) -> LabelPublic:
    get_image(db, dataset_id=dataset_id, image_id=image_id)
    with db.begin() as conn:
        row = current(conn, image_id)
        if row is None:
            raise Conflict(f"image {image_id} has no label to review; label it first")
        write_label(conn, dataset_id=dataset_id, image_id=image_id, user=user, action="review",
                    operation=new_operation(), after={**snapshot(row), "review_state": state})
        row = current(conn, image_id)
    return label_public(row, classes_of(db, dataset_id))


def history(db: Database, *, dataset_id: str, image_id: str, limit: int = 100) -> list[HistoryPublic]:
    get_image(db, dataset_id=dataset_id, image_id=image_id)
    with db.begin() as conn:
        rows = conn.execute(select(T.history).where(T.history.c.image_id == image_id)
                            .order_by(T.history.c.id.desc()).limit(limit)).all()
    return [HistoryPublic(**row_dict(r)) for r in rows]


def undo(db: Database, *, dataset_id: str, user: str) -> UndoPublic:
    """Revert `user`'s latest not-yet-undone operation in the dataset, whole, unless one of its
    images changed since (then nothing is reverted and the conflict is named)."""
    get_dataset(db, dataset_id)
    h = T.history
    with db.begin() as conn:
        last = conn.execute(select(h.c.operation, h.c.action).where(
            h.c.dataset_id == dataset_id, h.c.user == user, h.c.undone.is_(False),
            h.c.action.in_(sorted(UNDOABLE))).order_by(h.c.id.desc()).limit(1)).first()
        if last is None:
            return UndoPublic(operation=None, action=None, reverted=0, images=[])
        entries = [row_dict(r) for r in conn.execute(select(h).where(h.c.operation == last.operation)
                                                     .order_by(h.c.id.desc()))]
        changed = [e["image_id"] for e in entries if snapshot(current(conn, e["image_id"])) != e["after"]]
        if changed:
            raise Conflict(f"cannot undo {last.action}: {len(changed)} image(s) changed since, e.g. "
                           f"{changed[0]}; edit them directly")
        operation = new_operation()
        for entry in entries:
            write_label(conn, dataset_id=dataset_id, image_id=entry["image_id"], after=entry["before"],
                        user=user, action="undo", operation=operation)
            source = (entry["after"] or {}).get("source", "")
            if source.startswith("suggestion:"):
                conn.execute(T.suggestions.update().where(T.suggestions.c.id == source.split(":", 1)[1])
                             .values(state="open", decided_by=None, decided_at=None))
        conn.execute(h.update().where(h.c.operation == last.operation).values(undone=True))
    return UndoPublic(operation=last.operation, action=last.action, reverted=len(entries),
                      images=[e["image_id"] for e in entries])


def bulk(db: Database, *, dataset_id: str, action: str, image_ids: list[str], user: str,
         class_id: int | None = None, class_name: str | None = None, review_state: str | None = None,
         min_score: float = 0.0) -> dict[str, Any]:
    """One operation over many images (one undo step). Images it cannot apply to are skipped."""
    from labelling.suggestions import accept_in

    dataset = get_dataset(db, dataset_id)
    classes = classes_of(db, dataset_id)
    after_value = None
    if action == "set_class":
        if dataset["task"] != "classify":
            raise Invalid("set_class is for classify datasets; save boxes per image instead")
        after_value = {"class_id": resolve_class(classes, class_id=class_id, class_name=class_name)["id"]}
    if action == "review" and review_state is None:
        raise Invalid("a bulk review needs review_state")
    operation, changed, skipped = new_operation(), 0, []
    with db.begin() as conn:
        known = {r.id for r in conn.execute(select(T.images.c.id).where(
            T.images.c.dataset_id == dataset_id, T.images.c.id.in_(image_ids)))}
        for image_id in dict.fromkeys(image_ids):
            if image_id not in known:
                skipped.append({"image_id": image_id, "reason": "not an image of this dataset"})
                continue
            row = current(conn, image_id)
            if action == "set_class":
                write_label(conn, dataset_id=dataset_id, image_id=image_id, user=user, action="bulk_set_class",
                            operation=operation, after={"value": after_value, "source": "human",
                                                        "review_state": "unreviewed"})
                supersede_suggestions(conn, image_id, user)
            elif action == "clear":
                if row is None:
                    skipped.append({"image_id": image_id, "reason": "has no label"})
                    continue
                write_label(conn, dataset_id=dataset_id, image_id=image_id, user=user, action="bulk_clear",
                            operation=operation, after=None)
            elif action == "review":
                if row is None:
                    skipped.append({"image_id": image_id, "reason": "has no label to review"})
                    continue
                write_label(conn, dataset_id=dataset_id, image_id=image_id, user=user, action="bulk_review",
                            operation=operation, after={**snapshot(row), "review_state": review_state})
            else:
                reason = accept_in(conn, dataset=dataset, image_id=image_id, user=user, operation=operation,
                                   min_score=min_score)
                if reason:
                    skipped.append({"image_id": image_id, "reason": reason})
                    continue
            changed += 1
    return {"operation": operation, "changed": changed, "skipped": skipped}
