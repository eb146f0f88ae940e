"""autonn's job kinds: train_supernet, latency_table, search, finetune.

Each is a thin orchestration of the domain modules (train, predictors, latency, search, export)
around the store and autonn's tables. Every artifact is keyed by the job id that makes it, so a
redelivered job finds what an earlier attempt wrote and resumes rather than duplicates.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any, Literal

import torch
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from autonn.data import loaders_from_store
from autonn.export import export_bundle
from autonn.spaces import get_search_space
from autonn.spaces.base import SearchSpace, Supernet
from tango.datasets import load_version
from tango.queue import JobContext
from tango.store import ArtifactMissing

DEFAULT_SPACE = {"classify": "resnet_cls", "detect": "yolo_det"}
HOST_DEVICE = "host"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible to this worker")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class JobCheckpointer:
    """The training code's Checkpointer, on the job's write-once checkpoints in the store."""

    def __init__(self, ctx: JobContext, name: str):
        self.ctx, self.name = ctx, name

    def save(self, epoch: int, payload: bytes) -> None:
        self.ctx.store.put_if_absent(self.ctx.checkpoint_key(epoch, self.name), payload)

    def load_latest(self) -> tuple[int, bytes] | None:
        return self.ctx.latest_checkpoint(self.name)


def stage_progress(ctx: JobContext, start: float, end: float):  # noqa: ANN201
    """Map a stage's own 0..1 progress into its share of the job's progress."""
    def report(fraction: float, message: str, metrics: dict | None = None) -> None:
        detail = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (metrics or {}).items())
        ctx.progress(start + (end - start) * min(max(fraction, 0.0), 1.0), f"{message} {detail}".strip())
    return report


# --- supernets in the store ------------------------------------------------------------------------

def supernet_keys(supernet_id: str) -> dict[str, str]:
    base = f"supernets/{supernet_id}"
    return {"weights": f"{base}/weights.pt", "predictor": f"{base}/predictor.bin", "pairs": f"{base}/pairs.json",
            "meta": f"{base}/meta.json"}


def save_supernet_weights(ctx: JobContext, *, supernet: Supernet, space: SearchSpace, num_classes: int) -> str:
    buf = io.BytesIO()
    torch.save({"space": space.name, "options": getattr(space, "options", {}), "num_classes": num_classes,
                "state_dict": {k: v.cpu() for k, v in supernet.state_dict().items()}}, buf)
    return ctx.store.put_if_absent(supernet_keys(ctx.job_id)["weights"], buf.getvalue())


def load_supernet(store, row: dict[str, Any]) -> tuple[SearchSpace, Supernet]:  # noqa: ANN001
    blob = torch.load(io.BytesIO(store.get_bytes(supernet_keys(row["id"])["weights"])), weights_only=False)
    space = get_search_space(blob["space"], **blob["options"])
    supernet = space.build_supernet(num_classes=blob["num_classes"])
    supernet.load_state_dict(blob["state_dict"])
    return space, supernet.eval()


# --- train_supernet ------------------------------------------------------------------------------

class TrainSupernetParams(Strict):
    dataset_id: str = Field(min_length=1, max_length=64)
    dataset_version: str = Field(min_length=1, max_length=64)
    space: str | None = Field(None, description="search space; default by the dataset's task")
    space_options: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1, le=500)
    batch_size: int = Field(64, ge=2, le=1024)
    lr: float = Field(0.002, gt=0, le=10)
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="AdamW was the stable choice on small data")
    warmup_epochs: float = Field(0.5, ge=0, le=50)
    n_random: int = Field(2, ge=0, le=8, description="random sub-networks per step (sandwich rule)")
    predictor_archs: int = Field(60, ge=10, le=5000, description="sub-networks measured to fit the accuracy predictor")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    reuse: bool = Field(True, description="reuse a ready supernet of the same space on the same dataset version")


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
    from autonn.predictors import fit_accuracy_predictor, measure_archs
    from autonn.train import SeededShuffle, TrainConfig, train_supernet

    records = ctx.runtime.records
    manifest = load_version(ctx.store, p.dataset_id, p.dataset_version)
    space = get_search_space(p.space or DEFAULT_SPACE[manifest.task], **p.space_options)
    if p.reuse:
        row = records.reusable_supernet(space=space.name, options=space.options, dataset_id=p.dataset_id,
                                        version=p.dataset_version)
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
    config = TrainConfig(epochs=p.epochs, lr=p.lr, optimizer=p.optimizer, warmup_epochs=p.warmup_epochs,
                         n_random=p.n_random, seed=p.seed, batch_size=p.batch_size)
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
        archs = space.distinct_samples(p.predictor_archs, seed=p.seed + 1)
        pairs = measure_archs(space=space, supernet=supernet, archs=archs, calib_loader=loaders.calib,
                              val_loader=loaders.val, device=torch.device("cpu"),
                              progress=stage_progress(ctx, 0.75, 0.98))
        ctx.store.put_if_absent(keys["pairs"], json.dumps(pairs).encode())
    predictor = fit_accuracy_predictor(space=space, pairs=pairs, seed=p.seed)
    ctx.store.put_if_absent(keys["predictor"], predictor.to_bytes())
    metrics = {"val_largest": trained.final.get("val_largest"), "val_smallest": trained.final.get("val_smallest"),
               "predictor": predictor.report, "history": trained.history, "epochs": p.epochs,
               "train_seconds": round(time.monotonic() - started, 2), "device": str(device),
               "cardinality": space.cardinality(), "dataset_hash": loaders.manifest_hash}
    records.put_supernet(id=ctx.job_id, space=space.name, space_options=space.options, dataset_id=p.dataset_id,
                         dataset_version=p.dataset_version, task=manifest.task, classes=manifest.classes,
                         state="ready", weights_key=keys["weights"], predictor_key=keys["predictor"], metrics=metrics)
    return {"supernet_id": ctx.job_id, "reused": False, **summary(metrics)}


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in ("val_largest", "val_smallest", "predictor", "cardinality", "train_seconds")}


# --- latency_table -------------------------------------------------------------------------------

class LatencyTableParams(Strict):
    supernet_id: str | None = Field(None, description="take space, options and classes from this supernet")
    space: str | None = None
    space_options: dict[str, Any] = Field(default_factory=dict)
    num_classes: int = Field(10, ge=1, le=10_000)
    device: str = Field(HOST_DEVICE, description="'host' is timed by autonn itself; any other device profile "
                                                 "through its registered profiling agent (`tango agent`)")
    runtime: str = Field("onnxruntime-cpu", description="what times the models: on the host onnxruntime-cpu or "
                                                        "torch-cuda; on a device, a runtime its agent times")
    threads: int = Field(1, ge=1, le=256)
    n_fit_networks: int = Field(30, ge=0, le=500)
    rounds: int = Field(5, ge=2, le=50)
    runs_per_round: int = Field(20, ge=1, le=1_000)
    n_eval: int = Field(20, ge=0, le=500, description="held-out networks the table is checked against for its "
                                                      "report (MAPE, ±10 %, Kendall τ); 0: no report")
    seed: int = 0


def _space_for(runtime, p: LatencyTableParams) -> tuple[SearchSpace, int]:  # noqa: ANN001
    if p.supernet_id:
        row = runtime.records.get("supernets", p.supernet_id)
        if row is None:
            raise HTTPException(422, detail=f"no supernet {p.supernet_id!r}")
        return get_search_space(row["space"], **row["space_options"]), len(row["classes"])
    if not p.space:
        raise HTTPException(422, detail="name a search space (space) or a supernet (supernet_id)")
    try:
        return get_search_space(p.space, **p.space_options), p.num_classes
    except (KeyError, TypeError, ValueError) as exc:
        raise HTTPException(422, detail=str(exc).strip('"')) from exc


def precheck_latency(runtime, p: LatencyTableParams) -> None:  # noqa: ANN001
    from autonn.latency import RUNTIMES

    if p.n_eval == 1:
        raise HTTPException(422, detail="n_eval is 0 (no report) or at least 2: Kendall τ ranks pairs of networks")
    if p.device == HOST_DEVICE and p.runtime not in RUNTIMES:
        raise HTTPException(422, detail=f"the host is timed with {' or '.join(RUNTIMES)}, not {p.runtime!r}")
    if p.device != HOST_DEVICE:
        from autonn.remote import RemoteError, check_device

        try:
            check_device(settings=runtime.settings, device=p.device, runtime=p.runtime, threads=p.threads)
        except RemoteError as exc:
            raise HTTPException(exc.status, detail=str(exc)) from None
    _space_for(runtime, p)


def register_table(runtime, *, table, table_id: str | None) -> dict[str, Any]:  # noqa: ANN001
    import uuid

    from autonn.records import options_hash

    table_id = table_id or uuid.uuid4().hex
    key = f"latency/{table_id}.json"
    runtime.store.put_if_absent(key, table.to_json().encode())
    space = get_search_space(table.space, **table.space_options)
    table.bind(space)
    # The achievable range, so a project's budget can be checked the moment it is typed.
    report = {"entries": len(table.entries), "threads": table.threads, "build_seconds": table.build_seconds,
              "correction": table.correction, "n_networks_fit": table.n_networks_fit,
              "fastest_ms": float(table.predict(space.smallest())), "largest_ms": float(table.predict(space.largest()))}
    return runtime.records.put_latency_table(id=table_id, space=table.space,
                                             options_hash=options_hash(table.space, table.space_options),
                                             device=table.device, runtime=table.runtime, key=key,
                                             noise_floor=table.noise_floor, report=report)


def latency_table_job(ctx: JobContext, p: LatencyTableParams) -> dict[str, Any]:
    """Measure every block of a search space on the device (the host by autonn itself, any other device
    through its profiling agent), plus whole networks for the learned correction, in interleaved
    rounds; then check the table on `n_eval` held-out networks and store the report and its plot."""
    from autonn.latency import LatencyTable, build_latency_table, evaluate_latency_model
    from autonn.latency_report import build_report, report_keys, save_report

    runtime = ctx.runtime
    space, num_classes = _space_for(runtime, p)

    def measurer(phase: str):  # noqa: ANN202
        if p.device == HOST_DEVICE:
            return None
        from autonn.remote import remote_measurer

        return remote_measurer(settings=ctx.settings, store=ctx.store, device=p.device, task_id=f"{ctx.job_id}-{phase}")

    def progress_in(start: float, end: float):  # noqa: ANN202
        def progress(stage: str, done: int, total: int) -> None:
            ctx.progress(start + (end - start) * done / max(1, total), f"{stage} {done}/{total}")
        return progress

    split = 0.75 if p.n_eval else 1.0
    row = runtime.records.get("latency_tables", ctx.job_id)
    if row is None:
        table = build_latency_table(space=space, num_classes=num_classes, device=p.device, threads=p.threads,
                                    n_fit_networks=p.n_fit_networks, rounds=p.rounds, runs_per_round=p.runs_per_round,
                                    seed=p.seed, runtime=p.runtime, measure=measurer("table"),
                                    progress=progress_in(0.0, split))
        row = register_table(runtime, table=table, table_id=ctx.job_id)
    else:  # a redelivered job whose table is registered already goes on to its evaluation
        table = LatencyTable.from_json(ctx.store.get_bytes(row["key"]))
    evaluation = None
    if p.n_eval:
        key = report_keys(row["id"])["json"]
        if ctx.store.exists(key):
            report = ctx.store.get_json(key)
        else:
            started = time.monotonic()
            evaluated = evaluate_latency_model(table=table, space=space, num_classes=num_classes, n_networks=p.n_eval,
                                               rounds=p.rounds, seed=p.seed + 1, runs_per_round=p.runs_per_round,
                                               measure=measurer("eval"), progress=progress_in(split, 1.0))
            report = build_report(table=table, table_id=row["id"], evaluation=evaluated,
                                  eval_seconds=time.monotonic() - started)
        evaluation = save_report(ctx.store, row["id"], report)
        report_row = {**(row["report"] or {}), "evaluation": evaluation}
        row = runtime.records.put_latency_table(**{**row, "report": report_row})
    return {"latency_table_id": row["id"], "entries": len(table.entries), "noise_floor": table.noise_floor,
            "build_seconds": table.build_seconds, "device": table.device, "space": table.space,
            "runtime": table.runtime, "evaluation": evaluation,
            "report": f"/latency-tables/{row['id']}/report" if evaluation else None}


# --- search --------------------------------------------------------------------------------------

class SearchParams(Strict):
    supernet_id: str
    mode: Literal["budget", "front"] = "budget"
    budget_ms: float | None = Field(None, gt=0, le=1e6, description="latency budget at batch 1 (mode budget)")
    device: str = HOST_DEVICE
    latency_table_id: str | None = Field(None, description="default: the newest table for this space and device")
    n_points: int = Field(10, ge=2, le=100, description="points on the Pareto front (mode front)")
    verify: bool = Field(True, description="measure chosen sub-networks on the device (the host only)")
    population: int = Field(100, ge=8, le=2000)
    generations: int = Field(60, ge=1, le=5000)
    seed: int = 0


def _ready_supernet(runtime, supernet_id: str) -> dict[str, Any]:  # noqa: ANN001
    row = runtime.records.get("supernets", supernet_id)
    if row is None:
        raise HTTPException(422, detail=f"no supernet {supernet_id!r}; train one with a train_supernet job")
    if row["state"] != "ready":
        raise HTTPException(422, detail=f"supernet {supernet_id} is still {row['state']}; wait for its job to finish")
    return row


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

    supernet = _ready_supernet(runtime, p.supernet_id)
    _, table, space = _load_table(runtime, supernet, p)
    if p.mode == "budget":
        if p.budget_ms is None:
            raise HTTPException(422, detail="a budget search needs budget_ms (the latency budget in ms at batch 1)")
        _, fastest = fastest_arch(space=space, latency=table, seed=p.seed)
        if p.budget_ms < fastest:
            raise HTTPException(422, detail=f"a {p.budget_ms:g} ms budget is below the fastest sub-network on "
                                            f"{p.device}: {fastest:.3g} ms predicted; raise the budget to at least "
                                            f"{fastest:.3g} ms or pick a faster device")


def _measurer(space: SearchSpace, build, threads: int):  # noqa: ANN001, ANN202
    """arch -> measured ms on the host, timing the module `build(arch)` returns."""
    from autonn.latency import measure_network_ms, network_input_shape

    def measure(arch: dict) -> float:
        model = build(arch)
        timed = measure_network_ms(models={"net": (model, network_input_shape(space, arch))}, threads=threads)
        return float(timed["net"]["median_ms"])
    return measure


def search_job(ctx: JobContext, p: SearchParams) -> dict[str, Any]:
    """Evolutionary search over the accuracy predictor and the device's latency table; the winner
    is measured on the device and the search repeats, stricter, until the measurement fits."""
    from autonn.predictors import AccuracyPredictor
    from autonn.search import pareto_front, search_under_budget

    runtime = ctx.runtime
    supernet_row = _ready_supernet(runtime, p.supernet_id)
    table_id, table, space = _load_table(runtime, supernet_row, p)
    predictor = AccuracyPredictor.from_bytes(ctx.store.get_bytes(supernet_row["predictor_key"]), space=space)
    verify = p.verify and p.device == HOST_DEVICE
    measure = None
    if verify:
        _, supernet = load_supernet(ctx.store, supernet_row)
        measure = _measurer(space, supernet.extract, table.threads)
    base = {"supernet_id": p.supernet_id, "latency_table_id": table_id, "device": p.device,
            "noise_floor": table.noise_floor, "space": space.name}
    started = time.monotonic()
    ctx.progress(0.05, "searching")
    if p.mode == "front":
        points = pareto_front(space=space, accuracy=predictor.predict, latency=table, n_points=p.n_points,
                              population=p.population, generations=p.generations, seed=p.seed)
        front = []
        for i, pt in enumerate(points):
            front.append({"arch": pt.arch, "predicted_metric": float(pt.metric), "predicted_ms": float(pt.ms),
                          "measured_ms": measure(pt.arch) if measure else None})
            ctx.progress(0.3 + 0.7 * (i + 1) / len(points), f"measured {i + 1}/{len(points)} front points")
        return {**base, "mode": "front", "front": front, "seconds": round(time.monotonic() - started, 2)}
    if measure is None:
        from autonn.search import evolve

        res = evolve(space=space, accuracy=predictor.predict, latency=table, budget_ms=p.budget_ms,
                     population=p.population, generations=p.generations, seed=p.seed, device_name=p.device)
        return {**base, "mode": "budget", "budget_ms": p.budget_ms, "arch": res.arch,
                "predicted_metric": float(res.predicted_metric), "predicted_ms": float(res.predicted_ms),
                "measured_ms": None, "verified": False, "rounds": [],
                "seconds": round(time.monotonic() - started, 2)}
    res = search_under_budget(space=space, accuracy=predictor.predict, latency=table, measure=measure,
                              budget_ms=p.budget_ms, device_name=p.device, seed=p.seed, population=p.population,
                              generations=p.generations)
    return {**base, "mode": "budget", "budget_ms": p.budget_ms, "arch": res.arch,
            "predicted_metric": float(res.predicted_metric), "predicted_ms": float(res.predicted_ms),
            "measured_ms": float(res.measured_ms), "verified": True, "fallback": res.fallback,
            "rounds": [{"arch": r.arch, "predicted_metric": float(r.predicted_metric), "predicted_ms": float(r.predicted_ms),
                        "latency_scale": float(r.scale), "measured_ms": float(r.measured_ms)}
                       for r in res.rounds],
            "seconds": round(time.monotonic() - started, 2)}


# --- finetune ------------------------------------------------------------------------------------

class FinetuneParams(Strict):
    supernet_id: str
    search_job_id: str | None = Field(None, description="take the arch (and budget) from this search job")
    arch: dict[str, Any] | None = Field(None, description="or give the arch config directly")
    epochs: int = Field(5, ge=0, le=500)
    lr: float = Field(2e-4, gt=0, le=10)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    batch_size: int = Field(64, ge=2, le=1024)
    distill: bool = Field(True, description="distil from the supernet's largest sub-network while fine-tuning")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0


def _arch_source(runtime, p: FinetuneParams) -> tuple[dict[str, Any], dict[str, Any]]:  # noqa: ANN001
    """(arch, the search result it came from or {})."""
    if (p.arch is None) == (p.search_job_id is None):
        raise HTTPException(422, detail="give exactly one of arch or search_job_id")
    if p.arch is not None:
        return p.arch, {}
    from tango.jobs import JobNotFound

    try:
        job = runtime.jobs.get(p.search_job_id)
    except JobNotFound:
        raise HTTPException(422, detail=f"no search job {p.search_job_id!r}") from None
    if job.kind != "search" or job.state.value != "succeeded" or "arch" not in (job.result or {}):
        raise HTTPException(422, detail=f"job {p.search_job_id} is not a finished budget search "
                                        f"({job.kind}, {job.state.value})")
    return job.result["arch"], job.result


def precheck_finetune(runtime, p: FinetuneParams) -> None:  # noqa: ANN001
    row = _ready_supernet(runtime, p.supernet_id)
    arch, _ = _arch_source(runtime, p)
    try:
        get_search_space(row["space"], **row["space_options"]).validate(arch)
    except ValueError as exc:
        raise HTTPException(422, detail=f"that arch does not belong to {row['space']}: {exc}") from exc


def finetune_job(ctx: JobContext, p: FinetuneParams) -> dict[str, Any]:
    """Fine-tune the chosen sub-network, measure it, and export ONNX + TorchScript + model card."""
    from autonn.latency import LatencyTable
    from autonn.train import SeededShuffle, TrainConfig, evaluate_subnet, finetune

    runtime = ctx.runtime
    row = _ready_supernet(runtime, p.supernet_id)
    arch, searched = _arch_source(runtime, p)
    space, supernet = load_supernet(ctx.store, row)
    arch = space.validate(arch)
    device = pick_device(p.device)
    loaders = loaders_from_store(store=ctx.store, dataset_id=row["dataset_id"], version=row["dataset_version"],
                                 space=space, batch_size=p.batch_size,
                                 train_sampler_factory=lambda n: SeededShuffle(n, seed=p.seed))
    before = evaluate_subnet(space=space, supernet=supernet, arch=arch, calib_loader=loaders.calib,
                             val_loader=loaders.val, device=torch.device("cpu"))
    ctx.progress(0.05, f"sub-network from the supernet: val {before:.4f}")
    from autonn.train import extract_copy, recalibrate_bn

    model = extract_copy(supernet, arch)
    recalibrate_bn(model=model, loader=loaders.calib, space=space, arch=arch, device=torch.device("cpu"))
    metric, history = before, []
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if p.epochs > 0:
        config = TrainConfig(epochs=p.epochs, lr=p.lr, seed=p.seed, batch_size=p.batch_size, optimizer=p.optimizer)
        metric, history = finetune(space=space, model=model, arch=arch, train_loader=loaders.train,
                                   val_loader=loaders.val, config=config, device=device,
                                   teacher=supernet if p.distill else None,
                                   checkpointer=JobCheckpointer(ctx, "finetune.pt"),
                                   progress=stage_progress(ctx, 0.05, 0.8), meta={"job_id": ctx.job_id})
    model = model.cpu().eval()
    kept_finetune = metric >= before
    if not kept_finetune:
        # Fine-tuning made it worse on validation: ship the sub-network as the supernet trained it.
        model.load_state_dict(initial)
        metric = before
    test_metric = space.evaluate(model, loaders.test, arch=arch, device=torch.device("cpu")) if loaders.test else None
    ctx.progress(0.82, "measuring latency")
    latency: dict[str, Any] = {"device": searched.get("device", HOST_DEVICE), "budget_ms": searched.get("budget_ms"),
                               "predicted_ms": None, "measured_ms": None, "noise_floor": None, "runtime": None}
    table_id = searched.get("latency_table_id")
    table_row = runtime.records.get("latency_tables", table_id) if table_id else runtime.records.latest_latency_table(
        space=space.name, options=space.options, device=HOST_DEVICE)
    if table_row is not None:
        table = LatencyTable.from_json(ctx.store.get_bytes(table_row["key"])).bind(space)
        latency.update(predicted_ms=float(table.predict(arch)), noise_floor=table.noise_floor, runtime=table.runtime,
                       threads=table.threads, latency_table_id=table_row["id"], device=table.device)
        if table.device == HOST_DEVICE:
            latency["measured_ms"] = _measurer(space, lambda _arch: model, table.threads)(arch)
    ctx.progress(0.9, "exporting")
    metric_name = "top1" if space.task == "classify" else "mAP50-95"
    card = {"model_id": ctx.job_id, "arch": arch, "space": space.name, "space_options": space.options,
            "classes": row["classes"], "metric": {"name": metric_name, "val": float(metric),
                                                  "val_before_finetune": float(before),
                                                  "finetune_kept": kept_finetune,
                                                  "test": float(test_metric) if test_metric is not None else None},
            "latency": latency, "dataset": {"id": row["dataset_id"], "version": row["dataset_version"],
                                            "content_hash": loaders.manifest_hash},
            "supernet_id": p.supernet_id, "search_job_id": p.search_job_id, "history": history}
    bundle = export_bundle(model=model, task=space.task, input_size=space.input_size(arch), card=card)
    files = {name: f"models/{ctx.job_id}/{name}" for name in bundle}
    for name, data in bundle.items():
        ctx.store.put_if_absent(files[name], data)
    card = json.loads(bundle["card.json"])
    runtime.records.put_model(id=ctx.job_id, supernet_id=p.supernet_id, arch=arch, device=latency["device"],
                              budget_ms=latency["budget_ms"], metric=float(metric), files=files, card=card)
    return {"model_id": ctx.job_id, "metric": card["metric"], "latency": latency, "files": files,
            "params": card["params"], "flops": card["flops"]}

