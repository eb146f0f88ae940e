"""How well does a per-block latency table predict whole networks on this machine?

    python bench/latency.py [--device host] [--space resnet_cls] [--threads 1] [--networks 30]

Builds the table (every block plus the fit networks, interleaved), then times `--networks`
held-out sub-networks (another seed) and compares. Prints the figures and writes
bench/results/latency_<device>.json. Run it on a quiet machine: the noise floor printed beside
each error figure says how much of the error the machine's own jitter explains.
"""

from __future__ import annotations

import argparse
import json
import time

from common import timed_again, write_result

from autonn.latency import build_latency_table, evaluate_latency_model
from autonn.spaces.base import get_search_space

# Small options: CIFAR-sized inputs keep the table at 291 blocks and a build well under a minute.
DEFAULT_OPTIONS = {"resnet_cls": {"resolutions": [24, 28, 32], "base_widths": [16, 32, 64, 128], "stem_width": 16,
                                  "stem_stride": 1}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="host", help="a name for this machine; names the result file")
    ap.add_argument("--space", default="resnet_cls")
    ap.add_argument("--options", default=None, help="search-space options as JSON (default: small options)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (table and networks)")
    ap.add_argument("--networks", type=int, default=30, help="held-out networks to evaluate on")
    ap.add_argument("--fit-networks", type=int, default=30, help="networks the correction is fitted on")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--save-table", default=None, help="also write the table JSON here")
    args = ap.parse_args()

    options = json.loads(args.options) if args.options else DEFAULT_OPTIONS.get(args.space, {})
    space = get_search_space(args.space, **options)
    n_blocks = len(list(space.all_blocks()))
    print(f"{args.space} {options}: {n_blocks} blocks, {args.threads} thread(s), device {args.device!r}")

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"  {stage} {done}/{total}", flush=True)

    table = build_latency_table(space=space, num_classes=args.num_classes, device=args.device, threads=args.threads,
                                n_fit_networks=args.fit_networks, rounds=args.rounds, progress=progress)
    print(f"table built in {table.build_seconds:.1f} s: block noise floor {table.noise_floor:.1%}, "
          f"session overhead {table.overhead_ms * 1000:.1f} us, correction {table.correction['model']} "
          f"{[round(c, 5) for c in table.correction['coef']]} (LOO MAPE {table.correction.get('loo_mape')})")
    if args.save_table:
        table.save(args.save_table)

    start = time.perf_counter()
    report = evaluate_latency_model(table=table, space=space, num_classes=args.num_classes, n_networks=args.networks,
                                    rounds=args.rounds, seed=1, threads=args.threads)
    print(f"evaluated {report['n_networks']} held-out networks in {time.perf_counter() - start:.1f} s")
    again = timed_again(table=table, space=space, first=report, num_classes=args.num_classes, rounds=args.rounds,
                        seed=1, threads=args.threads)
    print(f"  MAPE {report['mape']:.1%} (table sum alone {report['mape_uncorrected']:.1%}), "
          f"within 10 % {report['within_10pct']:.0%}, Kendall tau {report['kendall_tau']:.3f}, "
          f"ground-truth noise floor {report['noise_floor']:.1%} over {report['timing_rounds']} rounds")
    print(f"  timed again: tau between the two timings {again['kendall_tau_retest']:.3f} (the machine against "
          f"itself); against their mean: tau {again['kendall_tau_both_timings']:.3f}, "
          f"MAPE {again['mape_both_timings']:.1%}")

    result = {
        "mape": report["mape"], "within_10pct": report["within_10pct"], "kendall_tau": report["kendall_tau"],
        "noise_floor": report["noise_floor"], "timing_rounds": report["timing_rounds"],
        "n_networks": report["n_networks"], **again,
        "mape_uncorrected": report["mape_uncorrected"], "kendall_tau_uncorrected": report["kendall_tau_uncorrected"],
        "table_noise_floor": table.noise_floor, "correction": table.correction,
        "table_build_seconds": table.build_seconds, "n_blocks": n_blocks, "n_fit_networks": table.n_networks_fit,
        "threads": args.threads, "rounds": args.rounds, "space": args.space, "space_options": options,
        "device": args.device, "runtime": table.runtime,
        "networks": [{"predicted_ms": p, "measured_ms": m, "noise": n} for p, m, n in
                     zip(report["predicted_ms"], report["measured_ms"], report["measured_noise"], strict=True)],
    }
    write_result(f"latency_{args.device}", result)


if __name__ == "__main__":
    main()
