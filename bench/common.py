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


def write_result(name: str, result: dict[str, Any]) -> Path:
    """bench/results/<name>.json with the commit and the machine added."""
    result = {**result, "commit": git("rev-parse", "HEAD"), "worktree_dirty": bool(git("status", "--porcelain")),
              "machine": machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return out
