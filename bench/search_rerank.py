"""Budgeted search with and without re-ranking on the supernet, side by side on one supernet.

    python bench/search_rerank.py --task classify [--images 2000] [--epochs 10] [--budgets 10]
    python bench/search_rerank.py --task detect --load DIR   # DIR from bench/nas_detect.py --save

The search job's default (`rerank_per_size` 2) searches once per input size, checks the shortlist
on the supernet's validation split and keeps the best measured; with 0 it keeps the accuracy
predictor's pick. For `--budgets` latency budgets from just above the fastest measured
sub-network to the largest, both are run against the same supernet, predictor and host latency
table. Each pick is scored on the *test* split (the supernet's sub-network, BN recalibrated, no
fine-tuning), which neither side saw. Figures: the mean test-metric change, how many budgets
re-ranking won, tied and lost, both sides' search seconds, and every pick's measured latency
against its budget. Writes bench/results/search_rerank_<task>.json.

Classification: the cluttered digits of bench/nas.py, the supernet trained with the product's
defaults, predictor pairs picked as the train_supernet job picks them. Detection: the supernet
and pairs a `bench/nas_detect.py --save DIR` run left (same data seed), since training one takes
most of that bench's time.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from common import measured_ms, write_result
from nas import OPTIONS as CLS_OPTIONS
from nas import RECIPE, digits_loaders
from nas_detect import OPTIONS as DET_OPTIONS
from nas_detect import shapes_loaders

from autonn.flops import FlopsTable
from autonn.jobs.search import SearchParams
from autonn.jobs.train_supernet import TrainSupernetParams
from autonn.latency import build_latency_table
from autonn.predictors import fit_accuracy_predictor, measure_archs, predictor_pairs
from autonn.search import BudgetUnreachable, search_under_budget
from autonn.spaces import get_search_space
from autonn.train import TrainConfig, evaluate_subnet, train_supernet
from tango.sampledata import SHAPE_CLASSES

JOB = TrainSupernetParams.model_fields
SEARCH = SearchParams.model_fields  # both sides search with the search job's defaults


def classify_setup(args: argparse.Namespace, result: dict):
    space = get_search_space("resnet_cls", **CLS_OPTIONS)
    loaders = digits_loaders(space, 64, args.seed, dataset="cluttered", images=args.images)
    supernet = space.build_supernet(num_classes=10)
    config = TrainConfig(epochs=args.epochs, lr=RECIPE["lr"], optimizer="adamw", warmup_epochs=0.5,
                         n_random=RECIPE["n_random"], label_weight=RECIPE["label_weight"], seed=args.seed)
    t = time.perf_counter()
    trained = train_supernet(space=space, supernet=supernet, train_loader=loaders.train, val_loader=loaders.val,
                             config=config, device=torch.device("cpu"))
    result.update(space_options=CLS_OPTIONS, dataset=f"cluttered digits 32 px, {args.images} train images",
                  epochs=args.epochs, supernet_train_seconds=round(time.perf_counter() - t, 1),
                  supernet_val_largest=trained.final["val_largest"])
    measure = partial(measure_archs, space=space, supernet=supernet, calib_loader=loaders.calib,
                      val_loader=loaders.val, device=torch.device("cpu"))
    pairs = predictor_pairs(space=space, measure=measure, cost=FlopsTable(space=space, num_classes=10),
                            n_archs=JOB["predictor_archs"].default, front_share=JOB["predictor_front_share"].default,
                            seed=args.seed)
    return space, supernet, loaders, pairs, 10


def detect_setup(args: argparse.Namespace, result: dict):
    if not args.load:
        raise SystemExit("--task detect needs --load DIR, a folder bench/nas_detect.py --save DIR wrote")
    space = get_search_space("yolo_det", **DET_OPTIONS)
    loaders = shapes_loaders(space, images=args.images, seed=args.seed, test_images=args.test_images)
    supernet = space.build_supernet(num_classes=len(SHAPE_CLASSES))
    supernet.load_state_dict(torch.load(Path(args.load) / "supernet.pt"))
    pairs = [(a, m) for a, m in json.loads((Path(args.load) / "pairs.json").read_text())]
    result.update(space_options=DET_OPTIONS, dataset=f"generated shapes, {args.images} images",
                  test_images=len(loaders.test.dataset),
                  supernet=f"loaded from {args.load} (bench/nas_detect.py --save)")
    return space, supernet.eval(), loaders, pairs, len(SHAPE_CLASSES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=["classify", "detect"], default="classify")
    ap.add_argument("--images", type=int, default=None, help="classify: 2000 train images; detect: 600 (nas_detect's)")
    ap.add_argument("--test-images", type=int, default=1500,
                    help="detect: more generated images for the test split only (nas_detect's --test-images)")
    ap.add_argument("--epochs", type=int, default=10, help="classify: supernet epochs")
    ap.add_argument("--load", help="detect: the folder bench/nas_detect.py --save wrote")
    ap.add_argument("--budgets", type=int, default=10)
    ap.add_argument("--per-size", type=int, default=SEARCH["rerank_per_size"].default)
    ap.add_argument("--table-networks", type=int, default=20, help="networks timed to fit the latency table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--result", default=None, help="bench/results/<name>.json (default search_rerank_<task>)")
    args = ap.parse_args()
    args.images = args.images or {"classify": 2000, "detect": 600}[args.task]
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cpu = torch.device("cpu")
    result: dict = {"task": args.task, "per_size": args.per_size, "budgets_n": args.budgets}
    setup = classify_setup if args.task == "classify" else detect_setup
    space, supernet, loaders, pairs, nc = setup(args, result)
    predictor = fit_accuracy_predictor(space=space, pairs=pairs, seed=args.seed)
    result.update(space=space.name, accuracy_predictor={k: predictor.report[k] for k in ("model", "rmse", "kendall_tau")},
                  accuracy_predictor_n_archs=len(pairs))
    print(f"predictor: {predictor.report['model']}, tau {predictor.report['kendall_tau']:.3f}", flush=True)
    table = build_latency_table(space=space, num_classes=nc, device="host", threads=1, n_fit_networks=args.table_networks)

    val = partial(measure_archs, space=space, supernet=supernet, calib_loader=loaders.calib, val_loader=loaders.val,
                  device=cpu)

    def rerank(archs: list) -> list[float]:
        return [m for _, m in val(archs=archs)]

    def test_metric(arch: dict) -> float:
        return evaluate_subnet(space=space, supernet=supernet, arch=arch, calib_loader=loaders.calib,
                               val_loader=loaders.test, device=cpu)

    fastest, largest = measured_ms(space, supernet, [space.smallest(), space.largest()], 1)
    measure = (lambda a: measured_ms(space, supernet, [a], 1)[0])
    rows = []
    for b in np.linspace(fastest * 1.1, largest, args.budgets):
        row: dict = {"budget_ms": float(b)}
        for side, kwargs in (("plain", {}), ("rerank", {"rerank": rerank, "per_size": args.per_size})):
            t = time.perf_counter()
            try:
                res = search_under_budget(space=space, accuracy=predictor.predict, latency=table, measure=measure,
                                          budget_ms=float(b), device_name="host", seed=args.seed,
                                          population=SEARCH["population"].default,
                                          generations=SEARCH["generations"].default, **kwargs)
            except BudgetUnreachable as exc:
                row[side] = {"refused": str(exc)}
                continue
            seconds = time.perf_counter() - t
            row[side] = {"arch": res.arch, "seconds": seconds, "predicted_metric": res.predicted_metric,
                         "val": res.measured_metric if res.measured_metric is not None else val(archs=[res.arch])[0][1],
                         "test": test_metric(res.arch), "measured_ms": res.measured_ms,
                         "input_size": space.input_size(res.arch)}
        rows.append(row)
        done = {s: row[s] for s in ("plain", "rerank") if "test" in row.get(s, {})}
        print(f"budget {b:.3f} ms: " + "; ".join(
            f"{s} {r['input_size']} px, predicted {r['predicted_metric']:.3f}, val {r['val']:.3f}, test {r['test']:.3f}, "
            f"{r['measured_ms']:.3f} ms, {r['seconds']:.1f} s" for s, r in done.items()), flush=True)
    both = [r for r in rows if "test" in r.get("plain", {}) and "test" in r.get("rerank", {})]
    diff = [r["rerank"]["test"] - r["plain"]["test"] for r in both]
    result.update(
        rows=rows, budgets_compared=len(both),
        test_gain_mean=float(np.mean(diff)) if diff else None,
        val_gain_mean=float(np.mean([r["rerank"]["val"] - r["plain"]["val"] for r in both])) if both else None,
        rerank_won=sum(d > 0 for d in diff), tied=sum(d == 0 for d in diff), rerank_lost=sum(d < 0 for d in diff),
        same_arch=sum(r["rerank"]["arch"] == r["plain"]["arch"] for r in both),
        search_seconds_median={s: float(np.median([r[s]["seconds"] for r in both])) for s in ("plain", "rerank")}
        if both else None,
        all_within_budget=all(r[s]["measured_ms"] <= r["budget_ms"] for r in both for s in ("plain", "rerank")))
    print(f"re-ranked vs predictor's pick over {len(both)} budgets: test {result['test_gain_mean']:+.4f} mean, "
          f"won {result['rerank_won']}, tied {result['tied']}, lost {result['rerank_lost']} "
          f"(same arch {result['same_arch']}); search seconds {result['search_seconds_median']}")
    write_result(args.result or f"search_rerank_{args.task}", result)


if __name__ == "__main__":
    main()
