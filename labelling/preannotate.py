"""The `preannotate` job: run autonn's current model (ONNX Runtime) over a batch of images and
store its predictions, with scores, as suggestions a person accepts or corrects. Work goes in
bounded batches (at most `concurrency` in flight), each committed as it finishes, with progress:
a large batch never times out as a whole, and a redelivered job skips what it already did."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from labelling import scoring
from labelling.catalog import classes_of, get_dataset
from labelling.errors import Invalid
from labelling.records import T
from labelling.schemas import DATASET_ID
from tango.jobs import utcnow
from tango.queue import JobContext
from tango.runtime import ServiceRuntime


class PreannotateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Field(pattern=DATASET_ID)
    model_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    image_ids: list[str] | None = Field(None, max_length=100_000, description="default: unlabelled images")
    limit: int = Field(1000, ge=1, le=100_000)
    conf: float = Field(0.25, gt=0.0, lt=1.0, description="detect: lowest box score suggested")
    iou: float = Field(0.5, gt=0.0, le=1.0)
    max_det: int = Field(100, ge=1, le=1000)
    batch: int = Field(16, ge=1, le=256)
    concurrency: int = Field(2, ge=1, le=4, description="batches in flight at once")


def class_map(card_classes: list[str], dataset_classes: list[dict], model_id: str) -> dict[int, int]:
    """Model class index -> dataset class id, by name (the card's `classes`)."""
    by_name = {c["name"]: c["id"] for c in dataset_classes}
    if not card_classes:
        raise Invalid(f"model {model_id!r} has no 'classes' in its card; cannot map its outputs to classes")
    mapping = {i: by_name[name] for i, name in enumerate(card_classes) if name in by_name}
    if not mapping:
        raise Invalid(f"model {model_id!r} predicts {', '.join(card_classes[:10])}, none of which the dataset has")
    return mapping


def precheck(runtime: ServiceRuntime, params: PreannotateParams) -> None:
    dataset = get_dataset(runtime.db, params.dataset_id)
    card = scoring.read_card(runtime.store, params.model_id)
    if card.get("task", "classify") != dataset["task"]:
        raise Invalid(f"model {params.model_id!r} is a {card.get('task')} model; dataset "
                      f"{params.dataset_id!r} is a {dataset['task']} dataset")
    class_map(list(card.get("classes", [])), classes_of(runtime.db, params.dataset_id), params.model_id)


def _targets(ctx: JobContext, params: PreannotateParams) -> list[dict]:
    img, lab, sug = T.images, T.labels, T.suggestions
    query = select(img.c.id, img.c.key).where(img.c.dataset_id == params.dataset_id)
    if params.image_ids is not None:
        query = query.where(img.c.id.in_(params.image_ids))
    else:
        query = query.select_from(img.outerjoin(lab, lab.c.image_id == img.c.id)).where(lab.c.image_id.is_(None))
    with ctx.runtime.db.begin() as conn:
        rows = conn.execute(query.order_by(img.c.created_at, img.c.id).limit(params.limit)).all()
        done = {r.image_id for r in conn.execute(select(sug.c.image_id).where(sug.c.job_id == ctx.job_id))}
    return [{"id": r.id, "key": r.key} for r in rows if r.id not in done]


def _suggestion(task: str, prediction: Any, mapping: dict[int, int]) -> tuple[dict, float] | None:
    if task == "classify":
        best = int(prediction.argmax())
        return ({"class_id": mapping[best]}, float(prediction[best])) if best in mapping else None
    boxes = [{"class_id": mapping[int(c)], "x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]),
              "y2": float(b[3]), "score": float(s)}
             for b, c, s in zip(prediction.boxes, prediction.classes, prediction.confidence, strict=True)
             if int(c) in mapping]
    score = sum(b["score"] for b in boxes) / len(boxes) if boxes else prediction.best_background
    return {"boxes": boxes}, float(score)


def run_preannotate(ctx: JobContext, params: PreannotateParams) -> dict[str, Any]:
    """Store the model's predictions as suggestions to accept or correct."""
    dataset = get_dataset(ctx.runtime.db, params.dataset_id)
    model = scoring.load_model(ctx.store, params.model_id)
    mapping = class_map(model.classes, classes_of(ctx.runtime.db, params.dataset_id), params.model_id)
    targets = _targets(ctx, params)
    task = dataset["task"]

    def work(batch: list[dict]) -> list:
        images = [scoring.decode_rgb(ctx.store.get_bytes(item["key"])) for item in batch]
        if task == "classify":
            return list(scoring.class_probabilities(model, images))
        return scoring.detect(model, images, conf=params.conf, iou=params.iou, max_det=params.max_det)

    done = suggested = boxes = 0
    ctx.progress(0.01, f"{len(targets)} images to pre-annotate")
    for batch, predictions in scoring.in_batches(work, targets, batch=params.batch, concurrency=params.concurrency):
        now = utcnow()
        with ctx.runtime.db.begin() as conn:
            for item, prediction in zip(batch, predictions, strict=True):
                made = _suggestion(task, prediction, mapping)
                if made is None:
                    continue
                value, score = made
                conn.execute(T.suggestions.update().where(T.suggestions.c.image_id == item["id"],
                                                          T.suggestions.c.state == "open")
                             .values(state="superseded", decided_by=f"model:{params.model_id}", decided_at=now))
                conn.execute(T.suggestions.insert().values(
                    id=uuid.uuid4().hex, dataset_id=params.dataset_id, image_id=item["id"], model_id=params.model_id,
                    job_id=ctx.job_id, value=value, score=score, state="open", created_at=now))
                suggested += 1
                boxes += len(value.get("boxes", []))
        done += len(batch)
        ctx.progress(done / max(1, len(targets)), f"pre-annotated {done}/{len(targets)} images")
    return {"dataset_id": params.dataset_id, "model_id": params.model_id, "images": done, "suggested": suggested,
            "boxes": boxes if task == "detect" else None}
