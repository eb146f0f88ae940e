"""Does a sub-network's measured latency depend on its random weights? With and without denormals
flushed (autonn.latency.flushed_denormals), side by side in the same interleaved rounds.

    python bench/denormals.py [--networks 30] [--draws 2] [--rounds 5]

The latency table is measured on randomly initialised blocks and networks. If the same arch with
other random weights times differently, the table carries that as error. Each of `--networks`
held-out archs is built with `--draws` weight draws; every (arch, draw) is timed by ONNX Runtime
(1 thread) once with denormals flushed to zero on the timing thread and once without, all timers
shuffled together in every round. Reported per mode: Kendall tau between draws (1 = the draw does
not matter) and the spread of draw-to-draw ratios. Writes bench/results/denormals.json.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import write_result

from autonn.latency import _interleave, _networks, _ort_timer, export_onnx, kendall_tau, make_session
from autonn.spaces import get_search_space

OPTIONS = {"resolutions": [24, 28, 32], "base_widths": [16, 32, 64, 128], "stem_width": 16, "stem_stride": 1}


def with_flag(timer, flush: bool):  # noqa: ANN001, ANN201
    """The timer, run with denormal flushing set as asked (the interleaving turns it on; the
    unflushed timers turn it off for themselves, and it is off again once the rounds end)."""
    def timed(n: int) -> float:
        torch.set_flush_denormal(flush)
        return timer(n)
    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", type=int, default=30)
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not torch.set_flush_denormal(True):
        raise SystemExit("this CPU cannot flush denormals (no SSE3): nothing to compare")
    torch.set_flush_denormal(False)
    space = get_search_space("resnet_cls", **OPTIONS)
    archs = space.distinct_samples(args.networks, seed=1, extremes=False)
    timers = {}
    with tempfile.TemporaryDirectory(prefix="tango-denormals-") as tmp:
        for draw in range(args.draws):
            torch.manual_seed(1000 + draw)
            for i, (module, shape) in enumerate(_networks(space, archs, 10).values()):
                path = export_onnx(module, shape, Path(tmp) / f"d{draw}n{i}.onnx")
                timer = _ort_timer(make_session(path, threads=1), np.zeros(tuple(shape), np.float32))
                for flush in (True, False):
                    timers[(flush, draw, i)] = with_flag(timer, flush)
        per_round = _interleave({str(k): t for k, t in timers.items()}, rounds=args.rounds, runs_per_round=20,
                                warmup=5, seed=0)
    ms = {k: float(np.median(per_round[str(k)])) for k in timers}
    result: dict = {"networks": args.networks, "draws": args.draws, "rounds": args.rounds, "threads": 1,
                    "space_options": OPTIONS}
    for flush in (True, False):
        taus, ratios = [], []
        for a, b in itertools.combinations(range(args.draws), 2):
            x = [ms[(flush, a, i)] for i in range(args.networks)]
            y = [ms[(flush, b, i)] for i in range(args.networks)]
            taus.append(kendall_tau(x, y))
            ratios += [q / p for p, q in zip(x, y, strict=True)]
        mode = "flushed" if flush else "not_flushed"
        result[mode] = {"kendall_tau_between_draws": float(np.mean(taus)), "ratio_min": float(min(ratios)),
                        "ratio_max": float(max(ratios)),
                        "median_abs_log_ratio": float(np.median(np.abs(np.log(ratios)))),
                        "median_ms": float(np.median([v for k, v in ms.items() if k[0] == flush]))}
        print(f"{mode}: tau between weight draws {result[mode]['kendall_tau_between_draws']:.3f}, draw-to-draw "
              f"ratio {result[mode]['ratio_min']:.2f}-{result[mode]['ratio_max']:.2f} (median |log| "
              f"{result[mode]['median_abs_log_ratio']:.3f}), median {result[mode]['median_ms']:.3f} ms")
    write_result("denormals", result)


if __name__ == "__main__":
    main()
