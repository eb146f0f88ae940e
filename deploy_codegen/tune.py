"""The `tune` job: MetaSchedule tuning of a model's TVM llvm kernels. Slow (minutes to hours), so
it is its own job; its database is stored under tuning/<model_id>/<job id>/ and applied by a
`generate` job whose tvm options say `tune: true`."""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deploy_codegen.options import CPU_NAME, TargetOptions
from deploy_codegen.source import MODEL_ID, SourceModel, load_source
from tango.store import Store

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")


class TuneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(pattern=MODEL_ID)
    trials: int = Field(64, ge=1, le=20000, description="MetaSchedule trials over all kernels")
    max_trials_per_task: int | None = Field(None, ge=1, le=20000)
    trials_per_iter: int | None = Field(None, ge=1, le=512, description=(
        "candidates per tuning round of one kernel; default min(64, max_trials_per_task, trials). Small "
        "rounds under a large per-kernel cap let the scheduler give the slowest kernels the most trials"))
    num_cores: int | None = Field(None, ge=1, le=512, description="threads of the compiled kernels; default: "
                                                                   "this machine's cores")
    cpu: str | None = Field(None, pattern=CPU_NAME,
                            description="LLVM -mcpu the kernels are tuned for; default: this machine's CPU")
    builder_timeout_s: float = Field(180.0, gt=0, le=3600, description="per candidate; TVM's 30 s default "
                                                                       "fails every candidate on 2 cores")
    measure: bool = Field(True, description="time untuned and tuned builds on the reference input")


def tuning_prefix(model_id: str, job_id: str) -> str:
    return f"tuning/{model_id}/{job_id}"


def latest_tuning(store: Store, source: SourceModel, opts: TargetOptions) -> dict[str, Any] | None:
    """The newest stored database made for this exact ONNX graph, core count and CPU."""
    from deploy_codegen.targets.tvm import resolve_cpu

    cores, cpu = opts.num_cores or os.cpu_count() or 1, resolve_cpu(opts.cpu)
    metas = [store.get_json(k) for k in store.list(f"tuning/{source.model_id}") if k.endswith("/meta.json")]
    # A database tuned before the CPU was recorded was tuned for baseline x86-64.
    fits = [m for m in metas if m["onnx_sha256"] == source.onnx_sha256 and m["num_cores"] == cores
            and m.get("cpu", "x86-64") == cpu]
    return max(fits, key=lambda m: m["created_at"]) if fits else None


def _median_ms(ex, params, x: np.ndarray, rounds: int = 20) -> float:  # noqa: ANN001
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(x), *params]
    vm["main"](*args)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        vm["main"](*args)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def tune(ctx, params: TuneParams) -> dict[str, Any]:  # noqa: ANN001
    """MetaSchedule-tune the model's TVM llvm build and store the database."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    from deploy_codegen.targets.tvm import compile_module, import_onnx, llvm_target, prepare_for_tuning, resolve_cpu

    source = load_source(ctx.store, params.model_id)
    cores, cpu = params.num_cores or os.cpu_count() or 1, resolve_cpu(params.cpu)
    target = llvm_target(cores, cpu)
    ctx.progress(0.02, "importing the ONNX graph into Relax")
    mod, weights = import_onnx(source)
    prepared = prepare_for_tuning(mod, target)
    done = {"trials": 0, "cancelled": False}

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):  # noqa: ANN001
            done["trials"] += len(measure_candidates)
            if done["cancelled"]:
                return
            try:
                ctx.progress(0.05 + 0.85 * min(done["trials"] / params.trials, 1.0),
                             f"tuning: {done['trials']}/{params.trials} trials")
            except Exception:  # JobCancelled cannot cross TVM's FFI; remember it and stop below
                done["cancelled"] = True
                raise

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tango-tune-") as work:
        try:
            ms.relax_integration.tune_relax(
                prepared, params={}, target=target, work_dir=work, max_trials_global=params.trials,
                max_trials_per_task=params.max_trials_per_task,
                num_trials_per_iter=params.trials_per_iter or min(64, params.max_trials_per_task or params.trials,
                                                                  params.trials),
                # Candidates are compiled on every core even when the kernels run on fewer: building
                # is most of a trial's time, and builds finish before the runner times them.
                builder=ms.builder.LocalBuilder(max_workers=max(cores, os.cpu_count() or 1),
                                                timeout_sec=params.builder_timeout_s),
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), Progress()], seed=0)
        except Exception:
            if done["cancelled"]:
                ctx.progress(0.9, "cancelling")  # raises JobCancelled
            raise
        seconds = time.perf_counter() - started
        records = sum(1 for _ in (Path(work) / DATABASE_FILES[1]).open()) if (Path(work) / DATABASE_FILES[1]).exists() else 0
        prefix = tuning_prefix(source.model_id, ctx.job_id)
        for name in DATABASE_FILES:
            ctx.store.put_if_absent(f"{prefix}/{name}", (Path(work) / name).read_bytes())
        latency = {}
        if params.measure:
            ctx.progress(0.92, "timing untuned and tuned builds")
            x = np.random.default_rng(0).random(source.input_shape, dtype=np.float32)
            latency = {"untuned_median_ms": _median_ms(compile_module(mod, target), weights, x),
                       "tuned_median_ms": _median_ms(compile_module(mod, target, database_dir=work), weights, x)}
    meta = {"job_id": ctx.job_id, "model_id": source.model_id, "onnx_sha256": source.onnx_sha256,
            "target": str(target), "num_cores": cores, "cpu": cpu, "trials": params.trials,
            "max_trials_per_task": params.max_trials_per_task, "trials_per_iter": params.trials_per_iter,
            "measured_trials": done["trials"],
            "records": records, "seconds": round(seconds, 1), "prefix": prefix,
            "created_at": datetime.now(UTC).isoformat(), **latency}
    ctx.store.put_if_absent(f"{prefix}/meta.json", json.dumps(meta, indent=2).encode())
    return meta
