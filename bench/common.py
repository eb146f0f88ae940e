"""What every benchmark records beside its figures: the commit and the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
                            "python": platform.python_version(), "load_avg": list(os.getloadavg())}
    for module in ("torch", "onnxruntime", "numpy"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    return info


def measured_ms(space, supernet, archs, threads: int, rounds: int = 5) -> list[float]:  # noqa: ANN001
    """Median ONNX Runtime ms of each arch, extracted from `supernet`, all timed in the same
    interleaved rounds."""
    from autonn.latency import measure_network_ms, network_input_shape

    models = {str(i): (supernet.extract(a), network_input_shape(space, a)) for i, a in enumerate(archs)}
    timed = measure_network_ms(models=models, threads=threads, rounds=rounds)
    return [timed[str(i)]["median_ms"] for i in range(len(archs))]


def timed_again(*, table, space, first: dict[str, Any], num_classes: int, **evaluate_kwargs: Any) -> dict[str, Any]:  # noqa: ANN001
    """Time the networks of `first` (an evaluate_latency_model report) once more. The Kendall tau
    between the two timings says how well the machine agrees with itself: on a noisy host it is
    well below 1, and a predictor's tau against one timing is bounded by that noise. The mean of
    both timings is a steadier ground truth; tau and MAPE against it are given too."""
    import numpy as np

    from autonn.latency import evaluate_latency_model, kendall_tau

    again = evaluate_latency_model(table=table, space=space, num_classes=num_classes, n_networks=first["n_networks"],
                                   **evaluate_kwargs)
    if again["archs"] != first["archs"]:
        raise ValueError("the second timing must be of the same networks (same n_networks and seed)")
    both = (np.asarray(first["measured_ms"]) + np.asarray(again["measured_ms"])) / 2
    predicted = np.asarray(first["predicted_ms"])
    return {"kendall_tau_retest": kendall_tau(first["measured_ms"], again["measured_ms"]),
            "kendall_tau_second_timing": again["kendall_tau"], "mape_second_timing": again["mape"],
            "noise_floor_second_timing": again["noise_floor"], "timing_rounds_second_timing": again["timing_rounds"],
            "kendall_tau_both_timings": kendall_tau(predicted, both),
            "mape_both_timings": float(np.mean(np.abs(predicted - both) / both))}


def write_result(name: str, result: dict[str, Any]) -> Path:
    """bench/results/<name>.json with the commit and the machine added. TANGO_BENCH_COMMIT, where
    set, names the commit instead: the GPU machine gets a copy of the working tree whose .git is
    not the one it was copied from (there `git rev-parse HEAD` named an older commit)."""
    commit, dirty = os.environ.get("TANGO_BENCH_COMMIT"), None
    if not commit:
        commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain"))
    result = {**result, "commit": commit, "worktree_dirty": dirty, "machine": machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return out
