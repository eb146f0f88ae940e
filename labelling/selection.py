"""The `select` job: rank the unlabelled pool and queue the best batch for people to label.

With a model (autonn's ONNX export, `model_id`), uncertainty from its predictions, optionally
spread by diversity (hybrid); without one, a cold start by typicality and diversity over the
cheap embeddings stored at import. The ranking itself is labelling.strategies, the same code the
benchmark measures."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from labelling import embeddings as emb
from labelling import scoring, strategies
from labelling.catalog import get_dataset
from labelling.errors import Invalid
from labelling.records import T
from labelling.schemas import DATASET_ID
from tango.jobs import utcnow
from tango.queue import JobContext
from tango.runtime import ServiceRuntime

Strategy = Literal["random", "least_confidence", "margin", "entropy", "kcenter", "hybrid", "cold_start"]
Measure = Literal["least_confidence", "margin", "entropy"]


class SelectParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Field(pattern=DATASET_ID)
    batch_size: int = Field(20, ge=1, le=5000)
    strategy: Strategy | None = Field(None, description=f"default: {strategies.DEFAULT_STRATEGY} with a model, "
                                                        f"{strategies.COLD_START_STRATEGY} without")
    model_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
                                 description="autonn model (models/<id>/model.onnx + card.json); none: cold start")
    measure: Measure = Field("margin", description="uncertainty measure of hybrid and of detection scores")
    aggregate: Literal["mean", "max"] = Field("max", description="detect: per-image aggregation of box doubt")
    prefilter: int = Field(10, ge=1, le=100, description="hybrid: candidates = prefilter x batch_size")
    conf: float = Field(0.05, gt=0.0, lt=1.0, description="detect: lowest box score that counts as a box")
    seed: int = 0
    score_batch: int = Field(32, ge=1, le=512)
    concurrency: int = Field(2, ge=1, le=8, description="batches scored at once")


def strategy_of(params: SelectParams) -> str:
    if params.strategy:
        return params.strategy
    return strategies.DEFAULT_STRATEGY if params.model_id else strategies.COLD_START_STRATEGY


def precheck(runtime: ServiceRuntime, params: SelectParams) -> None:
    dataset = get_dataset(runtime.db, params.dataset_id)
    strategy = strategy_of(params)
    if strategy in strategies.NEEDS_MODEL and not params.model_id:
        raise Invalid(f"strategy {strategy!r} ranks by a model's doubt: give model_id, or use kcenter or "
                      "cold_start until a model exists")
    if params.model_id:
        card = scoring.read_card(runtime.store, params.model_id)
        if card.get("task", "classify") != dataset["task"]:
            raise Invalid(f"model {params.model_id!r} is a {card.get('task')} model; dataset "
                          f"{params.dataset_id!r} is a {dataset['task']} dataset")


def _pool(ctx: JobContext, dataset_id: str) -> tuple[list[dict], np.ndarray]:
    img, lab = T.images, T.labels
    with ctx.runtime.db.begin() as conn:
        rows = conn.execute(select(img.c.id, img.c.key, img.c.embedding, lab.c.image_id.label("labelled"))
                            .select_from(img.outerjoin(lab, lab.c.image_id == img.c.id))
                            .where(img.c.dataset_id == dataset_id).order_by(img.c.created_at, img.c.id)).all()
    pool = [{"id": r.id, "key": r.key, "embedding": r.embedding} for r in rows if r.labelled is None]
    labelled = [r.embedding for r in rows if r.labelled is not None and r.embedding is not None]
    return pool, np.stack([emb.from_bytes(e) for e in labelled]) if labelled else np.zeros((0, emb.DIM), np.float32)


def pool_embeddings(ctx: JobContext, pool: list[dict]) -> np.ndarray:
    out = []
    for item in pool:
        if item["embedding"] is None:  # imported before embeddings existed: compute now
            item["embedding"] = emb.to_bytes(emb.embed_array(scoring.decode_rgb(ctx.store.get_bytes(item["key"]))))
        out.append(emb.from_bytes(item["embedding"]))
    return np.stack(out)


def pool_uncertainty(ctx: JobContext, params: SelectParams, pool: list[dict], task: str, measure: str) -> np.ndarray:
    model = scoring.load_model(ctx.store, params.model_id)

    def work(batch: list[dict]) -> np.ndarray:
        images = [scoring.decode_rgb(ctx.store.get_bytes(item["key"])) for item in batch]
        if task == "classify":
            return strategies.uncertainty(scoring.class_probabilities(model, images), measure)
        dets = scoring.detect(model, images, conf=params.conf)
        return strategies.detection_uncertainty([d.scores for d in dets], [d.best_background for d in dets],
                                                measure=measure, aggregate=params.aggregate)

    parts, done = [], 0
    for batch, result in scoring.in_batches(work, pool, batch=params.score_batch, concurrency=params.concurrency):
        parts.append(result)
        done += len(batch)
        ctx.progress(0.05 + 0.85 * done / len(pool), f"scored {done}/{len(pool)} images with {params.model_id}")
    return np.concatenate(parts)


def run_select(ctx: JobContext, params: SelectParams) -> dict[str, Any]:
    """Rank the unlabelled pool (uncertainty, diversity, or a cold start) and queue the best batch."""
    dataset = get_dataset(ctx.runtime.db, params.dataset_id)
    strategy = strategy_of(params)
    with ctx.runtime.db.begin() as conn:
        existing = conn.execute(select(T.selections).where(T.selections.c.job_id == ctx.job_id)
                                .order_by(T.selections.c.rank)).all()
    if existing:  # a redelivered job that already wrote its queue
        return {"dataset_id": params.dataset_id, "strategy": strategy, "model_id": params.model_id,
                "selected": [r.image_id for r in existing], "scores": [r.score for r in existing]}
    ctx.progress(0.01, "reading the unlabelled pool")
    pool, labelled = _pool(ctx, params.dataset_id)
    measure = strategy if strategy in strategies.MEASURES else params.measure
    unc = pool_uncertainty(ctx, params, pool, dataset["task"], measure) \
        if pool and strategy in strategies.NEEDS_MODEL else None
    vectors = pool_embeddings(ctx, pool) if pool and strategy in strategies.NEEDS_EMBEDDINGS else None
    ctx.progress(0.92, f"selecting {params.batch_size} of {len(pool)} by {strategy}")
    chosen = strategies.select(strategy, batch_size=params.batch_size, uncertainty=unc, embeddings=vectors,
                               labelled_embeddings=labelled if len(labelled) else None, seed=params.seed,
                               prefilter=params.prefilter, pool_size=len(pool))
    now = utcnow()
    with ctx.runtime.db.begin() as conn:
        for rank, (i, score) in enumerate(zip(chosen.indices, chosen.scores, strict=True)):
            conn.execute(T.selections.insert().values(job_id=ctx.job_id, image_id=pool[i]["id"],
                                                      dataset_id=params.dataset_id, rank=rank, score=score,
                                                      strategy=strategy, created_at=now))
    return {"dataset_id": params.dataset_id, "strategy": strategy, "model_id": params.model_id,
            "measure": measure if unc is not None else None, "pool": len(pool), "labelled": int(len(labelled)),
            "selected": [pool[i]["id"] for i in chosen.indices], "scores": chosen.scores}
