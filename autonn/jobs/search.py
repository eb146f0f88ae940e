"""Job kind `search`: the best sub-network under a budget (measured on the device, searched again with
the measured correction) or a Pareto front."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import HTTPException
from pydantic import Field

from autonn.jobs.common import (HOST_DEVICE, ForwardOnly, Strict, load_supernet, measurer, pick_device, ready_supernet,
                                stage_progress)
from autonn.pareto import DEFAULT_SPREAD
from autonn.spaces import get_search_space
from tango.datasets import load_version
from tango.queue import JobContext
from tango.store import ArtifactMissing


class SearchParams(Strict):
    supernet_id: str
    mode: Literal["budget", "front"] = "budget"
    budget_ms: float | None = Field(None, gt=0, le=1e6, description="latency budget at batch 1 (mode budget)")
    device: str = HOST_DEVICE
    latency_table_id: str | None = Field(None, description="default: the newest table for this space and device")
    n_points: int = Field(10, ge=2, le=100, description="points on the Pareto front (mode front)")
    front_candidates: int | None = Field(None, ge=0, le=1000, description=(
        "mode front: measure this many sub-networks nearest the predicted front on the supernet (the dataset's "
        "validation split) and draw the front from their measured metric; 0 trusts the accuracy predictor; "
        "default 3 x n_points"))
    front_spread: Literal["hypervolume", "latency"] = Field(DEFAULT_SPREAD, description=(
        "mode front: which n_points of the front come back, both ends always: 'hypervolume' the ones covering the "
        "most of the trade-off (more points where accuracy climbs fast), 'latency' evenly spaced in latency"))
    verify: bool = Field(True, description="measure chosen sub-networks on the device (the host only)")
    population: int = Field(100, ge=8, le=2000)
    generations: int = Field(60, ge=1, le=5000)
    rerank_per_size: int = Field(2, ge=0, le=20, description=(
        "mode budget: search once per input size, shortlist this many sub-networks of each, measure them on the "
        "supernet (the dataset's validation split) and keep the best measured; 0 trusts the accuracy predictor"))
    refine_epochs: int | None = Field(None, ge=0, le=50, description=(
        "mode budget, with rerank_per_size: fine-tune the best measured sub-network of each input size this many "
        "epochs (the finetune job's recipe) and keep the best on the validation split; 0 keeps the best measured "
        "on the supernet; default by task (REFINE_EPOCHS_BY_TASK)"))
    near_budget_repeats: int = Field(2, ge=0, le=10, description=(
        "mode budget: a measurement within 5 % of the budget (either side) is taken this many more times and "
        "the median decides, so one moment's drift neither keeps nor discards a sub-network"))
    seed: int = 0


# Where the supernet's shared weights misjudge what fine-tuning makes of a network, the search
# fine-tunes its finalists (one per input size). See autonn.search._pick and bench/nas_detect.py.
REFINE_EPOCHS_BY_TASK = {"classify": 0, "detect": 5}


def _reranks(p: SearchParams) -> bool:
    return p.mode == "budget" and p.rerank_per_size > 0


def front_candidates(p: SearchParams) -> int:
    if p.mode != "front":
        return 0
    return 3 * p.n_points if p.front_candidates is None else p.front_candidates


def refine_epochs(p: SearchParams, task: str) -> int:
    if not _reranks(p):
        return 0
    return REFINE_EPOCHS_BY_TASK[task] if p.refine_epochs is None else p.refine_epochs


def _load_table(runtime, supernet: dict[str, Any], p: SearchParams):  # noqa: ANN001, ANN202
    from autonn.latency import LatencyTable

    records = runtime.records
    row = (records.get("latency_tables", p.latency_table_id) if p.latency_table_id else
           records.latest_latency_table(space=supernet["space"], options=supernet["space_options"], device=p.device))
    if row is None:
        raise HTTPException(422, detail=f"there is no latency table for {supernet['space']} on {p.device!r}; "
                                        "build one with a latency_table job (host) or import one")
    table = LatencyTable.from_json(runtime.store.get_bytes(row["key"]))
    space = get_search_space(supernet["space"], **supernet["space_options"])
    try:
        table.check_compatible(space)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return row["id"], table.bind(space), space


def precheck_search(runtime, p: SearchParams) -> None:  # noqa: ANN001
    from autonn.search import fastest_arch

    if p.refine_epochs and not _reranks(p):
        raise HTTPException(422, detail="refine_epochs fine-tunes the shortlist's finalists: it needs mode budget "
                                        "and rerank_per_size of at least 1")
    if 0 < front_candidates(p) < p.n_points:
        raise HTTPException(422, detail=f"front_candidates ({p.front_candidates}) must be 0 (trust the accuracy "
                                        f"predictor) or at least n_points ({p.n_points}): the front is drawn from "
                                        f"the measured candidates")
    supernet = ready_supernet(runtime, p.supernet_id)
    _, table, space = _load_table(runtime, supernet, p)
    if _reranks(p) or front_candidates(p):
        try:
            load_version(runtime.store, supernet["dataset_id"], supernet["dataset_version"])
        except ArtifactMissing:
            raise HTTPException(422, detail=_gone(supernet, p.mode)) from None
    if p.mode == "budget":
        if p.budget_ms is None:
            raise HTTPException(422, detail="a budget search needs budget_ms (the latency budget in ms at batch 1)")
        _, fastest = fastest_arch(space=space, latency=table, seed=p.seed)
        if p.budget_ms < fastest:
            raise HTTPException(422, detail=f"a {p.budget_ms:g} ms budget is below the fastest sub-network on "
                                            f"{p.device}: {fastest:.3g} ms predicted; raise the budget to at least "
                                            f"{fastest:.3g} ms or pick a faster device")


def _gone(row: dict[str, Any], mode: str) -> str:
    off = "front_candidates" if mode == "front" else "rerank_per_size"
    return (f"dataset {row['dataset_id']} version {row['dataset_version']!r}, which supernet {row['id']} was "
            f"trained on, is gone from the store; search with {off} 0 to trust the accuracy predictor alone")


def _supernet_metric(ctx: JobContext, row: dict[str, Any], space, supernet, mode: str):  # noqa: ANN001, ANN202
    """archs -> their metric on the supernet's validation split, BN recalibrated per arch (the
    accuracy predictor's own ground truth), from the dataset version the supernet was trained on."""
    import torch

    from autonn.data import loaders_from_store
    from autonn.predictors import measure_archs

    try:
        loaders = loaders_from_store(store=ctx.store, dataset_id=row["dataset_id"], version=row["dataset_version"],
                                     space=space, batch_size=64)
    except ArtifactMissing:
        raise HTTPException(422, detail=_gone(row, mode)) from None
    what = "sub-networks near the front" if mode == "front" else "shortlisted sub-networks"
    checked = 0

    def metric(archs: list[dict[str, Any]]) -> list[float]:
        nonlocal checked
        checked += len(archs)
        ctx.progress(0.3, f"checking {len(archs)} {what} on the validation split ({checked} so far)")
        pairs = measure_archs(space=space, supernet=supernet, archs=archs, calib_loader=loaders.calib,
                              val_loader=loaders.val, device=torch.device("cpu"))
        return [m for _, m in pairs]
    return metric


def _finetuned_metric(ctx: JobContext, row: dict[str, Any], space, supernet, *,  # noqa: ANN001, ANN202
                      epochs: int, seed: int):
    """archs -> their validation metric once fine-tuned from the supernet as the finetune job does
    it (its defaults, `epochs` epochs; the supernet's own sub-network where fine-tuning did not
    help, as that job hands back). Cached: a later round may shortlist the same finalists."""
    from autonn.delivery import deliver_subnet
    from autonn.jobs.finetune import FinetuneParams, finetune_inputs

    recipe = FinetuneParams(supernet_id=row["id"], epochs=epochs, seed=seed)  # the finetune job's defaults
    loaders, config = finetune_inputs(ctx.store, row, space, recipe)
    device, done, at = pick_device(recipe.device), {}, 0.4

    def metric(archs: list[dict[str, Any]]) -> list[float]:
        nonlocal at
        todo = {space.arch_key(a): a for a in archs if space.arch_key(a) not in done}
        for i, (key, arch) in enumerate(todo.items()):
            # Its own share of the progress bar, which also lets a cancel land between batches.
            # Later rounds may fine-tune more, so each takes a share of what is left below 0.9
            # and leaves some: the bar never runs backwards.
            start, at = at, at + (0.9 - at) / (len(todo) - i + 1)
            report = stage_progress(ctx, start, at)
            report(0.0, f"fine-tuning finalist {i + 1} of {len(todo)} ({space.input_size(arch)} px) "
                        f"for {epochs} epochs")
            done[key] = deliver_subnet(space=space, supernet=supernet, arch=arch, loaders=loaders, config=config,
                                       device=device, progress=report, distill=recipe.distill).val
        return [done[space.arch_key(a)] for a in archs]
    return metric


def search_job(ctx: JobContext, p: SearchParams) -> dict[str, Any]:
    """Evolutionary search over the accuracy predictor and the device's latency table; a budget
    search shortlists per input size, keeps the shortlisted sub-network that measures best on the
    supernet (with `refine_epochs`: fine-tunes the best of each input size and keeps the best
    fine-tuned), measures its latency on the device and repeats, stricter, until the measurement fits."""
    from autonn.predictors import AccuracyPredictor
    from autonn.search import pareto_front, search_under_budget

    runtime = ctx.runtime
    supernet_row = ready_supernet(runtime, p.supernet_id)
    table_id, table, space = _load_table(runtime, supernet_row, p)
    predictor = AccuracyPredictor.from_bytes(ctx.store.get_bytes(supernet_row["predictor_key"]), space=space)
    verify = p.verify and p.device == HOST_DEVICE
    rerank, candidates = _reranks(p), front_candidates(p)
    supernet = load_supernet(ctx.store, supernet_row)[1] if verify or rerank or candidates else None
    measure = measurer(space, supernet.extract, table.threads) if verify else None
    base = {"supernet_id": p.supernet_id, "latency_table_id": table_id, "device": p.device,
            "noise_floor": table.noise_floor, "space": space.name}
    started = time.monotonic()
    ctx.progress(0.05, "searching")
    if p.mode == "front":
        measured = (_supernet_metric(ForwardOnly(ctx), supernet_row, space, supernet, p.mode)
                    if candidates else None)
        points = pareto_front(space=space, accuracy=predictor.predict, latency=table, n_points=p.n_points,
                              population=p.population, generations=p.generations, seed=p.seed, rerank=measured,
                              candidates=candidates, spread=p.front_spread)
        front = []
        for i, pt in enumerate(points):
            reranked = pt.predicted_metric is not None
            front.append({"arch": pt.arch, "predicted_metric": float(pt.predicted_metric if reranked else pt.metric),
                          "supernet_metric": float(pt.metric) if reranked else None, "predicted_ms": float(pt.ms),
                          "measured_ms": measure(pt.arch) if measure else None})
            ctx.progress(0.3 + 0.7 * (i + 1) / len(points), f"measured {i + 1}/{len(points)} front points")
        why = (f"measured on the validation split, the other of the {candidates} candidates are dominated (as "
               f"accurate or less, and slower); raise front_candidates, or use a larger validation split"
               if candidates else "the accuracy predictor tells apart no more trade-offs in this space; train the "
                                  "supernet with a larger predictor_archs for a finer front")
        short = ({"note": f"only {len(front)} of the {p.n_points} points asked for: {why}"}
                 if len(front) < p.n_points else {})
        return {**base, "mode": "front", "front": front, "front_candidates": candidates, **short,
                "seconds": round(time.monotonic() - started, 2)}
    epochs = refine_epochs(p, space.task)
    ctx = ForwardOnly(ctx)
    res = search_under_budget(space=space, accuracy=predictor.predict, latency=table, measure=measure,
                              budget_ms=p.budget_ms, device_name=p.device, seed=p.seed, population=p.population,
                              generations=p.generations, per_size=p.rerank_per_size, repeats=p.near_budget_repeats,
                              rerank=_supernet_metric(ctx, supernet_row, space, supernet, p.mode) if rerank else None,
                              refine=_finetuned_metric(ctx, supernet_row, space, supernet, epochs=epochs, seed=p.seed)
                              if epochs else None)

    def optional(x: float | None) -> float | None:
        return None if x is None else float(x)
    return {**base, "mode": "budget", "budget_ms": p.budget_ms, "arch": res.arch,
            "predicted_metric": float(res.predicted_metric), "predicted_ms": float(res.predicted_ms),
            "supernet_metric": optional(res.measured_metric), "finetuned_metric": optional(res.refined_metric),
            "refine_epochs": epochs, "measured_ms": optional(res.measured_ms), "verified": verify,
            "fallback": res.fallback, "aimed_ms": optional(res.aimed_ms),
            "rounds": [{"arch": r.arch, "predicted_metric": float(r.predicted_metric), "predicted_ms": float(r.predicted_ms),
                        "latency_scale": float(r.scale), "measured_ms": optional(r.measured_ms),
                        "timings_ms": [float(t) for t in r.timings_ms],
                        "supernet_metric": optional(r.measured_metric),
                        "finetuned_metric": optional(r.refined_metric)} for r in res.rounds],
            "shortlist": [{"arch": c.arch, "predicted_metric": float(c.predicted_metric),
                           "predicted_ms": float(c.predicted_ms), "supernet_metric": optional(c.measured_metric),
                           "finetuned_metric": optional(c.refined_metric)}
                          for c in res.candidates],
            "seconds": round(time.monotonic() - started, 2)}
