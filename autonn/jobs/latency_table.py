"""Job kind `latency_table`: a space's per-block latency table on a device (the host, or a remote
device through its profiling agent)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException
from pydantic import Field

from autonn.jobs.common import HOST_DEVICE, Strict
from autonn.spaces import get_search_space
from autonn.spaces.base import SearchSpace
from tango.queue import JobContext


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
