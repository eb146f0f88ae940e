"""Latency on the target: timing, per-block latency tables, whole-network ground truth.

Timings on a shared machine drift by 6-16 % between rounds, so every measurement here is
*interleaved*: a round times each model once (median of `runs_per_round` runs) in a shuffled
order, drift hits all models alike, and a model's figure is the median of its per-round values.

Noise (`relative_spread`): for one model, (p75 - p25) / median of its per-round values; a set's
noise floor is the median of that over its models. An error figure below it means nothing.

ONNX Runtime CPU is the reference runtime: one session per model, `intra_op_num_threads` set
explicitly (the table and the whole networks it is checked against must use the same count),
`ORT_ENABLE_ALL`. Export uses the TorchScript exporter (`dynamo=False`): the dynamo exporter
needs onnxscript, which this image does not have. "torch-cuda" times eager PyTorch with CUDA
events (untested here: no GPU).

An isolated block pays one session call (binding, input copy, output allocation) that inside a
network it does not; an empty model's latency is measured with the blocks and subtracted from
each entry. What remains (memory traffic between blocks, ...) is left to the learned correction
in `autonn.latency_table`, fitted on whole networks timed in the *same* interleaved rounds as
the blocks, so drift between the two phases cannot leak into it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autonn.latency_table import LatencyTable, MissingBlockError, fit_correction, space_options
from autonn.spaces.base import Arch, BlockSpec, SearchSpace

__all__ = ["BlockTimings", "LatencyTable", "Measure", "MissingBlockError", "build_latency_table",
           "evaluate_latency_model", "export_onnx", "fit_correction", "flushed_denormals", "kendall_tau",
           "make_session", "measure_blocks", "measure_network_ms", "noise_floor", "relative_spread", "session_measure",
           "time_sessions", "time_torch_cuda"]

RUNTIMES = ("onnxruntime-cpu", "torch-cuda")  # torch-cuda: eager fp16, batch 1
EMPTY = "__empty__"
Progress = Callable[[str, int, int], None]  # (stage, done, total)
Timer = Callable[[int], float]  # runs the model n times, returns the median ms
# Times modules in interleaved rounds: (modules, *, runtime, threads, rounds, runs_per_round, warmup,
# seed, progress) -> per-round ms of every module and of the empty model (key EMPTY). The default
# is this host's ONNX Runtime; autonn.remote's times them on a device through its agent.
Measure = Callable[..., dict[str, list[float]]]


# --- noise ---------------------------------------------------------------------------------
def relative_spread(values: Sequence[float]) -> float:
    p25, p50, p75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float((p75 - p25) / p50) if p50 > 0 else float("nan")


def noise_floor(per_round: Mapping[str, Sequence[float]]) -> float:
    spreads = [relative_spread(v) for k, v in per_round.items() if k != EMPTY and len(v) > 1]
    return float(np.median(spreads)) if spreads else float("nan")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either list count as neither concordant nor discordant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    iu = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[:, None] - x[None, :])[iu], np.sign(y[:, None] - y[None, :])[iu]
    denom = np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    return float(np.sum(dx * dy) / denom) if denom else float("nan")


# --- ONNX Runtime --------------------------------------------------------------------------
def export_onnx(module: nn.Module, input_shape: Sequence[int], path: str | Path) -> Path:
    module = module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (torch.zeros(tuple(input_shape)),), str(path), opset_version=17,
                          dynamo=False, input_names=["x"], output_names=["y"])
    return Path(path)


def make_session(model: str | Path | bytes, *, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")  # see flushed_denormals
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def _empty_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "empty", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _ort_timer(session: Any, x: np.ndarray) -> Timer:
    feed, run = {session.get_inputs()[0].name: x}, session.run

    def timer(n: int) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            run(None, feed)
            times.append(time.perf_counter_ns() - t0)
        return statistics.median(times) / 1e6
    return timer


def _cuda_timer(module: nn.Module, input_shape: Sequence[int], dtype: torch.dtype) -> Timer:
    module = module.to("cuda", dtype).eval()
    x = torch.zeros(tuple(input_shape), device="cuda", dtype=dtype)

    @torch.inference_mode()
    def timer(n: int) -> float:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            start.record()
            module(x)
            end.record()
        torch.cuda.synchronize()
        return statistics.median(start.elapsed_time(end) for start, end in events)
    return timer


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Flush denormal floats to zero on this thread (FTZ/DAZ) while timing: the table is measured
    on random weights, and must not depend on which ones. bench/denormals.py times 30 archs, each
    with 3 weight draws, flushed and not, in the same interleaved rounds (AMD EPYC, 1 thread):
    draw-to-draw ratios 0.93-1.10 flushed vs 0.84-1.16 not, Kendall tau between draws 0.957 vs
    0.936; the median draw-to-draw difference is about 2 % either way: flushing cuts the tails.
    ONNX Runtime runs a 1-thread session on the calling thread, so this flag is the one it sees;
    pool threads get session.set_denormal_as_zero (make_session)."""
    flushed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def _interleave(timers: Mapping[str, Timer], *, rounds: int, runs_per_round: int, warmup: int,
                seed: int = 0, progress: Progress | None = None) -> dict[str, list[float]]:
    """tango.agent's interleaved rounds (one method on the host and on every device), with
    denormals flushed."""
    from tango.agent import interleave

    on_round = (lambda done, total: progress("timing", done, total)) if progress else None
    with flushed_denormals():
        return interleave(dict(timers), rounds=rounds, runs_per_round=runs_per_round, warmup=warmup, seed=seed,
                          on_round=on_round)


def time_sessions(sessions: Mapping[str, tuple[Any, np.ndarray]], *, rounds: int = 5, runs_per_round: int = 20,
                  warmup: int = 5, seed: int = 0) -> dict[str, list[float]]:
    """Per model, its per-round median ms over interleaved, shuffled rounds."""
    timers = {name: _ort_timer(sess, x) for name, (sess, x) in sessions.items()}
    return _interleave(timers, rounds=rounds, runs_per_round=runs_per_round, warmup=warmup, seed=seed)


def time_torch_cuda(module: nn.Module, input_shape: Sequence[int], *, rounds: int = 5, runs_per_round: int = 20,
                    warmup: int = 10, dtype: torch.dtype = torch.float16) -> list[float]:
    """Per-round median ms of eager `module` on the GPU, timed with CUDA events."""
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available on this machine; time with ONNX Runtime on CPU instead")
    timer = _cuda_timer(module, input_shape, dtype)
    return _interleave({"m": timer}, rounds=rounds, runs_per_round=runs_per_round, warmup=warmup)["m"]


def _measure(modules: Mapping[str, tuple[nn.Module, Sequence[int]]], *, runtime: str, threads: int, rounds: int,
             runs_per_round: int, warmup: int, seed: int, progress: Progress | None,
             sessions: OrderedDict[tuple[str, int], Any] | None = None) -> dict[str, list[float]]:
    """Per-round ms of every module and of an empty model (key EMPTY), all interleaved.
    `sessions`: ONNX Runtime sessions by (name, threads), looked up before exporting a module and
    filled with those exported (see session_measure); without it, every module is exported."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
    timers: dict[str, Timer] = {}
    if runtime == "torch-cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("runtime 'torch-cuda' needs a CUDA GPU, and this machine has none")
        timers[EMPTY] = _cuda_timer(nn.Identity(), (1, 8), torch.float16)
        for i, (name, (module, shape)) in enumerate(modules.items()):
            timers[name] = _cuda_timer(module, shape, torch.float16)
            if progress:
                progress("preparing", i + 1, len(modules))
    else:
        timers[EMPTY] = _ort_timer(make_session(_empty_model(), threads=threads), np.zeros((1, 8), np.float32))
        sessions = OrderedDict() if sessions is None else sessions
        with tempfile.TemporaryDirectory(prefix="tango-latency-") as tmp:
            for i, (name, (module, shape)) in enumerate(modules.items()):
                if (name, threads) in sessions:
                    sessions.move_to_end((name, threads))
                else:
                    path = export_onnx(module, shape, Path(tmp) / f"m{i}.onnx")
                    sessions[(name, threads)] = make_session(path, threads=threads)
                    path.unlink()  # the session holds the model; keep the disk clean as we go
                timers[name] = _ort_timer(sessions[(name, threads)], np.zeros(tuple(shape), np.float32))
                if progress:
                    progress("exporting", i + 1, len(modules))
    return _interleave(timers, rounds=rounds, runs_per_round=runs_per_round, warmup=warmup, seed=seed,
                       progress=progress)


def session_measure(*, keep: int = 4) -> Measure:
    """This host's Measure (ONNX Runtime), keeping the sessions of the last `keep` module names
    it exported: a module whose name comes again is timed on its session, not exported again. The
    caller must give a name to one module only (autonn.jobs.common.measurer names an arch by its
    config). Why: about three quarters of a reading is the export; the near-budget repeats and the
    finetune job's three readings time one network again and again, and three readings take half
    the time on one session (bench/readings.py, readings.json)."""
    sessions: OrderedDict[tuple[str, int], Any] = OrderedDict()

    def measure(modules: Mapping[str, tuple[nn.Module, Sequence[int]]], **kwargs: Any) -> dict[str, list[float]]:
        try:  # torch-cuda times the modules themselves and leaves `sessions` alone
            return _measure(modules, sessions=sessions, **kwargs)
        finally:
            while len(sessions) > keep:
                sessions.popitem(last=False)
    return measure


def _measure_until_quiet(measure: Measure, modules: Mapping[str, tuple[nn.Module, Sequence[int]]], *, rounds: int,
                         seed: int, target_noise: float | None, max_rounds: int | None,
                         **kwargs: Any) -> dict[str, list[float]]:
    """`measure`, then another `rounds` interleaved rounds while the noise floor is above
    `target_noise`, up to `max_rounds` in all (default 4 x `rounds`); per-round lists merged. A
    burst of load on a shared machine then lands in a minority of the rounds each median is taken
    over, not in most of them: on the 2-core AMD EPYC one 5-round timing came back with a 30-36 %
    noise floor, and the same models timed right after it with 1-1.4 %."""
    per_round: dict[str, list[float]] = {}
    for batch in range(max(1, (max_rounds or 4 * rounds) // rounds)):
        got = measure(modules, rounds=rounds, seed=seed + batch, **kwargs)
        for name, values in got.items():
            per_round.setdefault(name, []).extend(values)
        if target_noise is None or not noise_floor(per_round) > target_noise:
            break
    return per_round


# --- blocks and networks -------------------------------------------------------------------
@dataclass
class BlockTimings:
    ms: dict[str, float]  # median over rounds, session overhead included
    overhead_ms: float  # median latency of an empty model: one session call
    noise_floor: float
    per_round: dict[str, list[float]]


def measure_blocks(*, space: SearchSpace, specs: Sequence[BlockSpec], num_classes: int, threads: int = 1,
                   rounds: int = 5, runs_per_round: int = 20, warmup: int = 5, seed: int = 0,
                   runtime: str = "onnxruntime-cpu", progress: Progress | None = None) -> BlockTimings:
    modules = {s.key: (space.build_block(s.key, num_classes=num_classes), s.input_shape) for s in specs}
    per_round = _measure(modules, runtime=runtime, threads=threads, rounds=rounds, runs_per_round=runs_per_round,
                         warmup=warmup, seed=seed, progress=progress)
    overhead = float(np.median(per_round.pop(EMPTY)))
    return BlockTimings(ms={k: float(np.median(v)) for k, v in per_round.items()}, overhead_ms=overhead,
                        noise_floor=noise_floor(per_round), per_round=per_round)


def measure_network_ms(*, models: Mapping[str, tuple[nn.Module, Sequence[int]]], threads: int = 1, rounds: int = 5,
                       runs_per_round: int = 20, warmup: int = 5, seed: int = 0, runtime: str = "onnxruntime-cpu",
                       progress: Progress | None = None, measure: Measure | None = None,
                       target_noise: float | None = 0.05, max_rounds: int | None = None) -> dict[str, dict[str, Any]]:
    """Whole networks, interleaved: {name: {"median_ms", "noise", "rounds"}}; more rounds while
    the noise floor is above `target_noise` (see _measure_until_quiet)."""
    per_round = _measure_until_quiet(measure or _measure, models, rounds=rounds, seed=seed, target_noise=target_noise,
                                     max_rounds=max_rounds, runtime=runtime, threads=threads,
                                     runs_per_round=runs_per_round, warmup=warmup, progress=progress)
    per_round.pop(EMPTY, None)
    return {k: {"median_ms": float(np.median(v)), "noise": relative_spread(v), "rounds": v}
            for k, v in per_round.items()}


def network_input_shape(space: SearchSpace, arch: Arch) -> tuple[int, int, int, int]:
    size = space.input_size(arch)
    return (1, 3, size, size)


def _networks(space: SearchSpace, archs: Sequence[Arch], num_classes: int) -> dict[str, tuple[nn.Module, tuple]]:
    supernet = space.build_supernet(num_classes=num_classes).eval()
    return {f"__net{i}": (supernet.extract(a), network_input_shape(space, a)) for i, a in enumerate(archs)}


def build_latency_table(*, space: SearchSpace, num_classes: int, device: str, threads: int = 1,
                        n_fit_networks: int = 30, rounds: int = 5, runs_per_round: int = 20, warmup: int = 5,
                        seed: int = 0, runtime: str = "onnxruntime-cpu",
                        progress: Progress | None = None, measure: Measure | None = None,
                        target_noise: float | None = 0.05, max_rounds: int | None = None) -> LatencyTable:
    """Time every block of the space and `n_fit_networks` whole sub-networks (largest and smallest
    included) in the same interleaved rounds (more of them while the noise floor is above
    `target_noise`: _measure_until_quiet), then fit the correction on the networks."""
    start = time.perf_counter()
    specs = list(space.all_blocks())
    archs = space.distinct_samples(n_fit_networks, seed=seed) if n_fit_networks > 0 else []
    modules: dict[str, tuple[nn.Module, Sequence[int]]] = {
        s.key: (space.build_block(s.key, num_classes=num_classes), s.input_shape) for s in specs}
    nets = _networks(space, archs, num_classes)
    per_round = _measure_until_quiet(measure or _measure, {**modules, **nets}, rounds=rounds, seed=seed,
                                     target_noise=target_noise, max_rounds=max_rounds, runtime=runtime,
                                     threads=threads, runs_per_round=runs_per_round, warmup=warmup, progress=progress)
    overhead = float(np.median(per_round.pop(EMPTY)))
    net_rounds = {name: per_round.pop(name) for name in nets}
    table = LatencyTable(
        space=space.name, space_options=space_options(space), device=device, runtime=runtime, threads=threads,
        entries={k: max(0.0, float(np.median(v)) - overhead) for k, v in per_round.items()},
        overhead_ms=overhead, noise_floor=noise_floor(per_round), num_classes=num_classes)
    measured = [(a, float(np.median(net_rounds[name]))) for a, name in zip(archs, nets, strict=True)]
    table = fit_correction(table=table, space=space, measured=measured)
    table.correction["fit_noise_floor"] = noise_floor(net_rounds) if net_rounds else None
    table.build_seconds = round(time.perf_counter() - start, 2)
    return table


def evaluate_latency_model(*, table: LatencyTable, space: SearchSpace, num_classes: int, n_networks: int = 30,
                           rounds: int = 5, seed: int = 1, threads: int | None = None, runs_per_round: int = 20,
                           warmup: int = 5, progress: Progress | None = None,
                           measure: Measure | None = None) -> dict[str, Any]:
    """Prediction error of `table` on `n_networks` held-out sub-networks (sampled with `seed`,
    which should differ from the table's fit seed), against interleaved whole-network timings."""
    table.bind(space)
    threads = table.threads if threads is None else threads
    if threads != table.threads:
        raise ValueError(f"the table was measured with {table.threads} threads; whole networks must be timed "
                         f"with the same count, not {threads}")
    archs = space.distinct_samples(n_networks, seed=seed, extremes=False)
    nets = _networks(space, archs, num_classes)
    timed = measure_network_ms(models=nets, threads=threads, rounds=rounds, runs_per_round=runs_per_round,
                               warmup=warmup, seed=seed, runtime=table.runtime, progress=progress, measure=measure)
    measured = np.array([timed[name]["median_ms"] for name in nets])
    timing_rounds = len(timed[next(iter(nets))]["rounds"])
    predicted, uncorrected = table.predict_many(archs), table.predict_uncorrected(archs)
    rel = np.abs(predicted - measured) / measured
    return {
        "mape": float(rel.mean()),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "kendall_tau": kendall_tau(predicted, measured),
        "noise_floor": float(np.median([timed[name]["noise"] for name in nets])),
        "mape_uncorrected": float(np.mean(np.abs(uncorrected - measured) / measured)),
        "kendall_tau_uncorrected": kendall_tau(uncorrected, measured),
        "n_networks": len(archs),
        "timing_rounds": timing_rounds,  # more than `rounds` when the machine was noisy (measure_network_ms)
        "threads": threads,
        "correction": table.correction.get("model"),
        "predicted_ms": predicted.tolist(),
        "measured_ms": measured.tolist(),
        "measured_noise": [timed[name]["noise"] for name in nets],
        "archs": archs,
    }
