"""What a repeated latency reading of one network costs, exporting it each time or reusing its session.

    python bench/readings.py [--archs 5] [--readings 3] [--threads 1]

The product reads one network's latency more than once: the finetune job takes three readings of
the model it delivers, and the budget search takes two more of a pick within 5 % of the budget.
Each reading is `measure_network_ms` (5 interleaved rounds of 20 runs, more while noisy). Here
`--archs` random archs of the classifier space (bench/nas.py's options) and of the detector space
(bench/nas_detect.py's, at 64-128 px) are read `--readings` times two ways, alternating arch by
arch: `export` builds the measurer the finetune job used before (ONNX export and a new session
per reading) and `reuse` is autonn.jobs.common.measurer (one export per arch, its session kept).
Reported per space: wall seconds for the readings of one arch (median over archs) each way, their
ratio, and the ratio of the median ms each way reports (the timings themselves must agree).
Writes bench/results/readings.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import write_result

from autonn.jobs.common import measurer
from autonn.latency import measure_network_ms, network_input_shape
from autonn.spaces import get_search_space

SPACES = {"resnet_cls": {"resolutions": [24, 28, 32], "base_widths": [16, 32, 64, 128], "stem_width": 16,
                         "stem_stride": 1},
          "yolo_det": {"resolutions": [64, 96, 128], "backbone_widths": [16, 32, 48, 64],
                       "neck_widths": [48, 32, 48, 64]}}


def exporting_measurer(space, build, threads: int):
    """The measurer as it was: every reading exports the network and opens a new session."""
    def measure(arch: dict) -> float:
        timed = measure_network_ms(models={"net": (build(arch), network_input_shape(space, arch))}, threads=threads)
        return float(timed["net"]["median_ms"])
    return measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", type=int, default=5)
    ap.add_argument("--readings", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    result: dict = {"archs": args.archs, "readings": args.readings, "threads": args.threads, "spaces": {}}
    for name, options in SPACES.items():
        space = get_search_space(name, **options)
        supernet = space.build_supernet(num_classes=10)
        archs = space.distinct_samples(args.archs, seed=args.seed)
        ways = {"export": exporting_measurer, "reuse": measurer}
        seconds: dict[str, list[float]] = {w: [] for w in ways}
        ms: dict[str, list[float]] = {w: [] for w in ways}
        for i, arch in enumerate(archs):
            model = supernet.extract(arch)  # one module, as the finetune job times the model it delivers
            order = list(ways) if i % 2 == 0 else list(reversed(ways))  # neither way always goes first
            for way in order:
                measure = ways[way](space, lambda _arch, model=model: model, args.threads)
                t0 = time.perf_counter()
                readings = [measure(arch) for _ in range(args.readings)]
                seconds[way].append(time.perf_counter() - t0)
                ms[way].append(float(np.median(readings)))
        row = {"seconds_per_arch": {w: float(np.median(v)) for w, v in seconds.items()},
               "seconds_each": seconds, "median_ms": ms,
               "speedup": float(np.median(seconds["export"]) / np.median(seconds["reuse"])),
               "ms_ratio_reuse_to_export": float(np.median(np.asarray(ms["reuse"]) / np.asarray(ms["export"])))}
        result["spaces"][name] = row
        print(f"{name}: {args.readings} readings of one network {row['seconds_per_arch']['export']:.2f} s exporting "
              f"each time, {row['seconds_per_arch']['reuse']:.2f} s reusing the session "
              f"({row['speedup']:.2f}x); ms reuse / export {row['ms_ratio_reuse_to_export']:.3f}")
    write_result("readings", result)


if __name__ == "__main__":
    main()
