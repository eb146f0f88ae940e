"""The budget search's measuring rules, side by side on the same latency readings.

    python bench/budget_rules.py [--space yolo_det] [--budgets 12] [--trials 5] [--pool 9]

search_under_budget measures each pick on the device. Its near-budget repeats are compared here:
a reading within 5 % of the budget is taken twice more and the median decides (`repeats` 2, the
default; 0: one reading decides). The results at 1d1d938 also hold a third variant, `headroom`:
after a pick missed in a round whose latency scale already came from a measurement, later rounds
aimed under the budget by that miss. It delivered smaller networks and no fewer misses, and was
taken out of the search. Run live, the variants' searches part on their first differing reading, so a side-by-side run
cannot tell what a rule did. Here every arch any search measures gets `--pool` readings on this
host the first time it is asked for (the product's measurer, autonn.jobs.common.measurer: ONNX
Runtime, 5 interleaved rounds of 20 runs per reading), and trial t's j-th reading of that arch is
pool[(t + j) % pool] in every variant. An arch's true latency is the median of its pool.

Per variant, over `--budgets` budgets from just above the fastest network to the largest and
`--trials` trials each: how often the delivered network's true latency is over its budget (and
over 1.05 x), how often the search fell back to the fastest network, how many picks whose true
latency fits were turned down on their reading(s), readings and rounds per search, and how much
network each delivers: its MFLOPs against the default's. The accuracy side is log MFLOPs
(autonn.flops.FlopsTable), so the best arch under a budget is the biggest that fits and no trained
supernet is needed: the rule is about latency readings, and this keeps accuracy noise out. The
latency side is this host's table (build_latency_table) on random weights (timings do not depend
on them: bench/denormals.py). Writes bench/results/budget_rules_<space>.json.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import torch
from common import write_result

from autonn.flops import FlopsTable
from autonn.jobs.common import measurer
from autonn.latency import build_latency_table
from autonn.search import BudgetUnreachable, search_under_budget
from autonn.spaces import get_search_space
from autonn.spaces.base import hashable_arch

SPACES = {"resnet_cls": ({"resolutions": [24, 28, 32], "base_widths": [16, 32, 64, 128], "stem_width": 16,
                          "stem_stride": 1}, 30),  # bench/nas.py's options and fit networks
          "yolo_det": ({"resolutions": [64, 96, 128], "backbone_widths": [16, 32, 48, 64],
                        "neck_widths": [48, 32, 48, 64]}, 20)}  # bench/nas_detect.py's at 128 px
DEFAULT = "repeats_2"
VARIANTS = {"repeats_2": {"repeats": 2}, "repeats_0": {"repeats": 0}}


class Pool:
    """Readings per arch, taken the first time an arch is asked for; `replay(trial)` hands them out."""

    def __init__(self, measure, size: int) -> None:
        self.measure, self.size, self.readings = measure, size, {}

    def of(self, arch: dict) -> list[float]:
        key = hashable_arch(arch)
        if key not in self.readings:
            self.readings[key] = [self.measure(arch) for _ in range(self.size)]
        return self.readings[key]

    def truth(self, arch: dict) -> float:
        return float(np.median(self.of(arch)))

    def replay(self, trial: int):
        used: Counter = Counter()

        def measure(arch: dict) -> float:
            readings, key = self.of(arch), hashable_arch(arch)
            used[key] += 1
            return readings[(trial + used[key] - 1) % len(readings)]
        return measure


def summarise(rows: list[dict]) -> dict:
    out = {}
    for name in VARIANTS:
        got = [r[name] for r in rows if "true_ms" in r[name]]
        out[name] = {"searches": len(got), "refused": len(rows) - len(got),
                     "over_budget": sum(g["over"] for g in got), "over_1_05": sum(g["over_5pct"] for g in got),
                     "fallbacks": sum(g["fallback"] for g in got),
                     "turned_down_fitting": sum(g["turned_down_fitting"] for g in got),
                     "readings_per_search": float(np.mean([g["readings"] for g in got])),
                     "rounds_per_search": float(np.mean([g["rounds"] for g in got]))}
        both = [r for r in rows if "true_ms" in r[name] and "true_ms" in r[DEFAULT]]
        ratio = [r[name]["mflops"] / r[DEFAULT]["mflops"] for r in both]
        out[name]["mflops_vs_default"] = {"mean": float(np.mean(ratio)), "min": float(np.min(ratio)),
                                          "bigger": sum(x > 1 for x in ratio), "smaller": sum(x < 1 for x in ratio)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", choices=sorted(SPACES), default="yolo_det")
    ap.add_argument("--budgets", type=int, default=12)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--pool", type=int, default=9, help="readings taken of each arch measured")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    options, n_fit = SPACES[args.space]
    space = get_search_space(args.space, **options)
    supernet = space.build_supernet(num_classes=10).eval()
    table = build_latency_table(space=space, num_classes=10, device="host", threads=args.threads,
                                n_fit_networks=n_fit).bind(space)
    flops = FlopsTable(space=space, num_classes=10)
    pool = Pool(measurer(space, supernet.extract, args.threads), args.pool)
    fastest, largest = pool.truth(space.smallest()), pool.truth(space.largest())
    budgets = [float(b) for b in np.linspace(fastest * 1.1, largest, args.budgets)]
    rows: list[dict] = []
    t0 = time.perf_counter()
    for b in budgets:
        for trial in range(args.trials):
            row: dict = {"budget_ms": b, "trial": trial}
            for name, rules in VARIANTS.items():
                try:
                    res = search_under_budget(space=space, accuracy=lambda archs: np.log(flops(archs)), latency=table,
                                              measure=pool.replay(trial), budget_ms=b, device_name="host",
                                              seed=args.seed, **rules)
                except BudgetUnreachable as exc:
                    row[name] = {"refused": str(exc)}
                    continue
                truth = pool.truth(res.arch)
                turned_down = sum(1 for r in res.rounds if r.measured_ms is not None and r.measured_ms > b
                                  and pool.truth(r.arch) <= b)
                row[name] = {"measured_ms": res.measured_ms, "true_ms": truth, "over": truth > b,
                             "over_5pct": truth > 1.05 * b, "turned_down_fitting": turned_down,
                             "rounds": len(res.rounds), "readings": sum(len(r.timings_ms) for r in res.rounds),
                             "mflops": flops.mflops(res.arch),
                             "fallback": res.fallback}
            rows.append(row)
        print(f"budget {b:.3f} ms done: {len(pool.readings)} archs in the pool, {time.perf_counter() - t0:.0f} s",
              flush=True)
    summary = summarise(rows)
    spread = [(np.percentile(v, 75) - np.percentile(v, 25)) / np.median(v) for v in pool.readings.values()]
    result = {"space": space.name, "space_options": options, "budgets_ms": budgets, "trials": args.trials,
              "pool": args.pool, "threads": args.threads, "archs_measured": len(pool.readings),
              "pool_reading_spread_median": float(np.median(spread)), "latency_table_correction": table.correction,
              "variants": summary, "default": DEFAULT, "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    for name, s in summary.items():
        m = s["mflops_vs_default"]
        print(f"{name}: over budget {s['over_budget']}/{s['searches']} (over 1.05x {s['over_1_05']}), fallbacks "
              f"{s['fallbacks']}, fitting picks turned down {s['turned_down_fitting']}, "
              f"{s['readings_per_search']:.2f} readings and {s['rounds_per_search']:.2f} rounds per search; MFLOPs vs "
              f"{DEFAULT}: mean {m['mean']:.3f}, min {m['min']:.3f}, bigger {m['bigger']}, smaller {m['smaller']}")
    print(f"pool readings' spread (IQR / median): {result['pool_reading_spread_median']:.1%}")
    write_result(f"budget_rules_{args.space}", result)


if __name__ == "__main__":
    main()
