"""Latency measured on another device, through its profiling agent.

autonn exports the models to ONNX into the store (`measurements/<task id>/`), asks project_manager
for a measurement task on the device, and waits; the device's agent (`tango agent`) downloads the
models through project_manager, times them in interleaved rounds (the method of autonn.latency) and
posts per-round figures. They come back in the shape the host's timer returns, so
`build_latency_table` and `evaluate_latency_model` take them unchanged (`measure=`).

Task ids are chosen here (the job id plus a phase), and creating a task again returns the existing
one: a redelivered job picks up the measurement its first attempt started instead of repeating it.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from autonn.latency import EMPTY, Measure, Progress, _empty_model, export_onnx
from tango.client import ServiceClient, ServiceError
from tango.settings import Settings
from tango.store import Store

FINISHED = ("succeeded", "failed", "cancelled")


class RemoteError(RuntimeError):
    """A device cannot be measured (yet); `status` is the HTTP status a precheck should answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _client(settings: Settings) -> ServiceClient:
    if not settings.service_token:
        raise RemoteError(422, "autonn times only the host itself; other devices are measured by their agent "
                               "through project_manager, which needs the service token: set TANGO_SERVICE_TOKEN "
                               "(the same value) for autonn and project_manager")
    return ServiceClient(settings.project_manager_url, token=settings.service_token, timeout=30.0)


def check_device(*, settings: Settings, device: str, runtime: str, threads: int = 1) -> dict[str, Any]:
    """The device's profile, if an agent is registered for it that times `runtime` with `threads`;
    else RemoteError."""
    with _client(settings) as pm:
        try:
            profile = pm.request("GET", f"/devices/{device}")
        except ServiceError as exc:
            if exc.status == 404:
                raise RemoteError(422, f"there is no device profile {device!r} at project_manager; create it "
                                       "(POST /devices) or pick one from GET /devices") from None
            raise RemoteError(503 if exc.status is None or exc.status >= 500 else 422, str(exc)) from None
    agent = profile.get("agent") or {}
    if not agent.get("registered"):
        raise RemoteError(422, f"no agent is registered for device {device!r}: run `tango agent --server "
                               f"{settings.project_manager_url} --device {device}` on it (its token: "
                               f"POST /devices/{device}/agent-token)")
    timing = (agent.get("facts") or {}).get("timing_runtimes", [])
    if runtime not in timing:
        raise RemoteError(422, f"the agent on {device!r} times {', '.join(timing) or 'nothing'}, not {runtime!r}")
    most = (agent.get("facts") or {}).get("max_threads", 1)
    if threads > most:
        raise RemoteError(422, f"the agent on {device!r} lets a measurement use at most {most} threads, not {threads}")
    return profile


def _export(store: Store, task_id: str, models: Mapping[str, tuple[nn.Module | bytes, Sequence[int]]],
            progress: Progress | None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    specs, names = [], {}
    with tempfile.TemporaryDirectory(prefix="tango-remote-") as tmp:
        for i, (name, (module, shape)) in enumerate(models.items()):
            safe = f"m{i}"  # block keys hold ':' and the like; the task names models plainly
            key = f"measurements/{task_id}/{safe}.onnx"
            if not store.exists(key):
                if not isinstance(module, bytes):
                    module = export_onnx(module, shape, Path(tmp) / "m.onnx").read_bytes()
                store.put_if_absent(key, module)
            specs.append({"name": safe, "key": key, "input_shape": [int(d) for d in shape]})
            names[safe] = name
            if progress:
                progress("exporting", i + 1, len(models))
    return specs, names


def _wait(pm: ServiceClient, device: str, task: dict[str, Any], *, timeout: float, poll: float,
          progress: Progress | None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    path = f"/devices/{device}/measurements/{task['id']}"
    while task["state"] not in FINISHED:
        if progress:
            progress(f"measuring on {device} ({task['message']})", round(100 * task["progress"]), 100)
        if time.monotonic() > deadline:
            raise TimeoutError(f"measurement task {task['id']} on {device!r} did not finish within {timeout:.0f} s "
                               f"({task['state']}: {task['message']}); is `tango agent` running on the device?")
        time.sleep(poll)
        try:
            task = pm.request("GET", path)
        except ServiceError as exc:
            if exc.status is not None and exc.status < 500:
                raise
            # project_manager restarting: keep waiting until the deadline
    return task


def measure_remote(*, settings: Settings, store: Store, device: str,
                   models: Mapping[str, tuple[nn.Module | bytes, Sequence[int]]], rounds: int, threads: int,
                   progress: Progress | None = None, timeout: float | None = None, runs_per_round: int = 20,
                   warmup: int = 5, seed: int = 0, runtime: str = "onnxruntime-cpu",
                   task_id: str | None = None) -> dict[str, list[float]]:
    """Per model, its per-round median ms on `device`, timed by the device's agent in interleaved
    rounds. A model may be given as ONNX bytes instead of a module."""
    task_id = task_id or uuid.uuid4().hex
    timeout = timeout if timeout is not None else settings.measurement_timeout_seconds
    poll = settings.measurement_poll_seconds
    specs, names = _export(store, task_id, models, progress)
    body = {"id": task_id, "models": specs, "runtime": runtime, "threads": threads, "rounds": rounds,
            "runs_per_round": runs_per_round, "warmup": warmup, "seed": seed}
    with _client(settings) as pm:
        task = pm.request("POST", f"/devices/{device}/measurements", json=body)
        try:
            task = _wait(pm, device, task, timeout=timeout, poll=poll, progress=progress)
        except BaseException:  # timed out, or the job was cancelled: the agent need not go on
            try:
                pm.request("POST", f"/devices/{device}/measurements/{task_id}/cancel")
            except ServiceError:
                pass
            raise
    if task["state"] != "succeeded":
        raise RuntimeError(f"measurement task {task_id} on {device!r} {task['state']}: {task.get('error') or ''}")
    return {names[k]: [float(x) for x in v] for k, v in task["results"]["timings"].items()}


def remote_measurer(*, settings: Settings, store: Store, device: str, task_id: str,
                    timeout: float | None = None) -> Measure:
    """A `measure=` for autonn.latency that times on `device`, the empty model included, as one
    measurement task with id `task_id` (one id per phase of a job: the table, the evaluation).
    Further calls (more rounds on a noisy device, autonn.latency._measure_until_quiet) are tasks
    `task_id-2`, `task_id-3`, ...: new ids, or the server would hand back the first task's results,
    and the same ids when a resumed job repeats the calls in the same order."""
    calls = [0]

    def measure(modules: Mapping[str, tuple[nn.Module, Sequence[int]]], *, runtime: str, threads: int, rounds: int,
                runs_per_round: int, warmup: int, seed: int,
                progress: Progress | None = None) -> dict[str, list[float]]:
        calls[0] += 1
        models = {EMPTY: (_empty_model(), (1, 8)), **modules}
        return measure_remote(settings=settings, store=store, device=device, models=models, rounds=rounds,
                              threads=threads, progress=progress, timeout=timeout, runs_per_round=runs_per_round,
                              warmup=warmup, seed=seed, runtime=runtime,
                              task_id=task_id if calls[0] == 1 else f"{task_id}-{calls[0]}")
    return measure
