"""Job kind `train_supernet`: train a supernet on a frozen dataset version, fit its accuracy predictor."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch
from fastapi import HTTPException
from pydantic import Field

from autonn.data import loaders_from_store
from autonn.jobs.common import (DEFAULT_SPACE, JobCheckpointer, pick_device, save_supernet_weights,
                               stage_progress, Strict, supernet_keys)
from autonn.spaces import get_search_space
from tango.datasets import load_version
from tango.queue import JobContext
from tango.store import ArtifactMissing

if TYPE_CHECKING:
    from autonn.train import TrainConfig


# Measured on digits in bench/nas.py (16 epochs): lr 5e-3 with the label loss on distilled sub-networks
# brought 10/10 sub-networks within 2 points of the same architectures trained alone (2/10 at 2e-3
# without it). n_random 3 for classification puts bench/nas.py's compared sub-networks 9 / 10 within 2
# points of training alone, against 6 / 10 with 2 (nas_recipe_n3.json, nas_amd_n3.json), for 16 %
# more training time; the whole bench with it: 9 / 10 (nas_amd_n3_full.json). The digits demo, 4
# data seeds side by side: 0.982 test top-1 on average with 3, 0.977 with 2, never lower on a seed
# (demo_seeds.json). Detection keeps the lr and n_random it was tested with, and trains the
# smallest sub-network at a size drawn each step: on the shapes set (bench/sandwich.py, n_random 2,
# 3 seeds) that raised the 96 px probes' mean test mAP50-95 on every seed (0.267 -> 0.292 on
# average), the largest's val mAP on every seed, and put every probe above its 64 px self (84-100 %
# with the smallest always at 64 px), for 0.96 points less at 64 px and 3-5 % more training time.
TASK_DEFAULTS = {"classify": {"lr": 5e-3, "label_weight": 1.0, "n_random": 3, "smallest_size": "min"},
                 "detect": {"lr": 2e-3, "label_weight": 0.0, "n_random": 2, "smallest_size": "random"}}


class TrainSupernetParams(Strict):
    dataset_id: str = Field(min_length=1, max_length=64)
    dataset_version: str = Field(min_length=1, max_length=64)
    space: str | None = Field(None, description="search space; default by the dataset's task")
    space_options: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1, le=500)
    batch_size: int = Field(64, ge=2, le=1024)
    lr: float | None = Field(None, gt=0, le=10, description="default by task (TASK_DEFAULTS)")
    label_weight: float | None = Field(None, ge=0, le=10, description="task-loss weight on distilled sub-networks; "
                                                                      "default by task (TASK_DEFAULTS)")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="AdamW was the stable choice on small data")
    warmup_epochs: float = Field(0.5, ge=0, le=50)
    n_random: int | None = Field(None, ge=0, le=8, description="random sub-networks per step (sandwich rule); "
                                                                "default by task (TASK_DEFAULTS)")
    smallest_size: Literal["min", "random"] | None = Field(None, description=(
        "the smallest sub-network's input size each step: the lowest, or drawn from the space's sizes; "
        "default by task (TASK_DEFAULTS)"))
    predictor_archs: int = Field(60, ge=10, le=5000, description="sub-networks measured to fit the accuracy predictor")
    predictor_front_share: float = Field(0.3, ge=0, le=0.9, description=(
        "share of predictor_archs picked, in two rounds, from Pareto fronts of the predictor so far (against "
        "FLOPs) instead of at random: the predictor is then fitted where the search goes"))
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    reuse: bool = Field(True, description="reuse a ready supernet of the same space on the same dataset version")


def train_config(*, params: TrainSupernetParams, task: str) -> TrainConfig:
    """The job's TrainConfig: what the params set, the rest from TASK_DEFAULTS[task]."""
    from autonn.train import TrainConfig

    picked = {k: getattr(params, k) if getattr(params, k) is not None else v for k, v in TASK_DEFAULTS[task].items()}
    return TrainConfig(epochs=params.epochs, optimizer=params.optimizer, warmup_epochs=params.warmup_epochs,
                       seed=params.seed, batch_size=params.batch_size, **picked)


def recipe(*, params: TrainSupernetParams, task: str) -> dict[str, Any]:
    """What a supernet's weights and predictor depend on besides its space and data. A supernet is
    reused only for the same recipe: a person who raises the epochs expects a new training."""
    from dataclasses import asdict

    config = {k: v for k, v in asdict(train_config(params=params, task=task)).items() if k != "progress_every"}
    if config["smallest_size"] == "min":  # the rule before the choice existed: supernets trained so stay reusable
        del config["smallest_size"]
    return {**config, "predictor_archs": params.predictor_archs, "predictor_front_share": params.predictor_front_share}


def precheck_train(runtime, params: TrainSupernetParams) -> None:  # noqa: ANN001
    try:
        manifest = load_version(runtime.store, params.dataset_id, params.dataset_version)
    except ArtifactMissing:
        raise HTTPException(422, detail=f"dataset {params.dataset_id} has no frozen version "
                                        f"{params.dataset_version!r}; freeze one in the labelling service first") from None
    try:
        space = get_search_space(params.space or DEFAULT_SPACE[manifest.task], **params.space_options)
    except (KeyError, TypeError, ValueError) as exc:
        raise HTTPException(422, detail=str(exc).strip('"')) from exc
    if space.task != manifest.task:
        raise HTTPException(422, detail=f"search space {space.name} is for {space.task}; "
                                        f"dataset {params.dataset_id} is a {manifest.task} dataset")


def train_supernet_job(ctx: JobContext, p: TrainSupernetParams) -> dict[str, Any]:
    """Train a weight-sharing supernet on a frozen dataset version and fit its accuracy predictor."""
    from autonn.flops import FlopsTable
    from autonn.predictors import fit_accuracy_predictor, measure_archs, predictor_pairs
    from autonn.train import SeededShuffle, train_supernet

    records = ctx.runtime.records
    manifest = load_version(ctx.store, p.dataset_id, p.dataset_version)
    space = get_search_space(p.space or DEFAULT_SPACE[manifest.task], **p.space_options)
    made_with = recipe(params=p, task=manifest.task)
    if p.reuse:
        row = records.reusable_supernet(space=space.name, options=space.options, dataset_id=p.dataset_id,
                                        version=p.dataset_version, recipe=made_with)
        if row is not None and row["id"] != ctx.job_id:
            return {"supernet_id": row["id"], "reused": True, **summary(row["metrics"])}
    records.put_supernet(id=ctx.job_id, space=space.name, space_options=space.options, dataset_id=p.dataset_id,
                         dataset_version=p.dataset_version, task=manifest.task, classes=manifest.classes,
                         state="training")
    device = pick_device(p.device)
    torch.manual_seed(p.seed)
    loaders = loaders_from_store(store=ctx.store, dataset_id=p.dataset_id, version=p.dataset_version, space=space,
                                 batch_size=p.batch_size, train_sampler_factory=lambda n: SeededShuffle(n, seed=p.seed))
    supernet = space.build_supernet(num_classes=loaders.num_classes)
    config = train_config(params=p, task=manifest.task)
    started = time.monotonic()
    common = dict(space=space, supernet=supernet, val_loader=loaders.val, config=config,
                  checkpointer=JobCheckpointer(ctx, "supernet.pt"), progress=stage_progress(ctx, 0.0, 0.75),
                  meta={"job_id": ctx.job_id, "dataset": [p.dataset_id, p.dataset_version]})
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        from autonn.ddp import train_supernet_ddp

        # One process per GPU; rank 0 (this worker) checkpoints and reports progress.
        trained = train_supernet_ddp(train_dataset=loaders.train.dataset, collate_fn=loaders.train.collate_fn,
                                     **common)
    else:
        trained = train_supernet(train_loader=loaders.train, device=device, **common)
    supernet.cpu().eval()
    keys = supernet_keys(ctx.job_id)
    save_supernet_weights(ctx, supernet=supernet, space=space, num_classes=loaders.num_classes)
    if ctx.store.exists(keys["pairs"]):
        pairs = [(a, m) for a, m in ctx.store.get_json(keys["pairs"])]
    else:
        measure = partial(measure_archs, space=space, supernet=supernet, calib_loader=loaders.calib,
                          val_loader=loaders.val, device=torch.device("cpu"))
        pairs = predictor_pairs(space=space, measure=partial(measure, progress=stage_progress(ctx, 0.75, 0.92)),
                                front_measure=partial(measure, progress=stage_progress(ctx, 0.92, 0.98)),
                                cost=FlopsTable(space=space, num_classes=loaders.num_classes),
                                n_archs=p.predictor_archs, front_share=p.predictor_front_share, seed=p.seed)
        ctx.store.put_if_absent(keys["pairs"], json.dumps(pairs).encode())
    predictor = fit_accuracy_predictor(space=space, pairs=pairs, seed=p.seed)
    ctx.store.put_if_absent(keys["predictor"], predictor.to_bytes())
    metrics = {"val_largest": trained.final.get("val_largest"), "val_smallest": trained.final.get("val_smallest"),
               "predictor": predictor.report, "history": trained.history, "epochs": p.epochs,
               "train_seconds": round(time.monotonic() - started, 2), "device": str(device),
               "cardinality": space.cardinality(), "dataset_hash": loaders.manifest_hash, "recipe": made_with}
    records.put_supernet(id=ctx.job_id, space=space.name, space_options=space.options, dataset_id=p.dataset_id,
                         dataset_version=p.dataset_version, task=manifest.task, classes=manifest.classes,
                         state="ready", weights_key=keys["weights"], predictor_key=keys["predictor"], metrics=metrics)
    return {"supernet_id": ctx.job_id, "reused": False, **summary(metrics)}


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in ("val_largest", "val_smallest", "predictor", "cardinality", "train_seconds")}
