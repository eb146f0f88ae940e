"""Supernet NAS for classification on this CPU, end to end, with the figures of issue 3.

    python bench/nas.py [--dataset cluttered] [--images 3000] [--epochs 16] [--budgets 20] [--standalone 10]

On offline data (--dataset digits: scikit-learn's 1,797 digits upscaled, which every sub-network
learns to 98.5-100 %, too easy to tell fronts apart; --dataset cluttered, the default: those glyphs
scaled, shifted and turned on noisy grey gradients with distractor strokes, generated at any size,
test glyphs never seen in training): train the supernet (sandwich rule + in-place
distillation), fit two accuracy predictors on the same number of measured sub-networks (all
random, or 30 % of them from Pareto fronts as the train_supernet job does), build the host
latency table, then measure
  - search time per budget (stopping at a plateau, the default; and all 500 generations, with
    how often the plateau stop found as good an arch) and per 10-point Pareto front,
  - the latency predictor against interleaved whole-network timings (MAPE, ±10 %, Kendall τ,
    noise floor), and τ between two timings of the same networks (the machine against itself),
  - the budget hit rate over ≥20 budgets (measured ≤ 1.05 × budget),
  - NSGA-II vs random search at equal queries: hypervolume on *measured* latency and test accuracy
    over --hv-seeds runs of each, one reference (the nadir of every measured point). The headline
    is the search job's default front: each side's 3 x 12 archs nearest its predicted front measured
    on the supernet (val split) and the front drawn from those (autonn.pareto.rerank_front), the
    same number for both sides. Each front's 12 points are chosen both ways in autonn.pareto.SPREADS
    (the most hypervolume, the default; evenly in latency, the rule before it), all measured
    together. Also the front of predicted values alone, on predicted values, at
    shorter query counts, and with the all-random predictor,
  - supernet sub-networks vs the same architectures trained alone for the same epochs and recipe
    (both: final weights, test accuracy; the standalone run validates on the val split).
bench/nas.py does not train detectors: `detection_latency_gain_at_equal_map` is the mean of the
bench/nas_detect.py results named by --detection-results, each copied with its commit and machine.
Writes bench/results/nas.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from functools import partial

import numpy as np
import torch
from common import RESULTS, measured_ms, timed_again, write_result

from autonn.data import make_loaders
from autonn.jobs.train_supernet import TASK_DEFAULTS, TrainSupernetParams
from autonn.latency import build_latency_table, evaluate_latency_model
from autonn.flops import FlopsTable
from autonn.predictors import add_front_pairs, fit_accuracy_predictor, measure_archs
from autonn.jobs.search import SearchParams, front_candidates
from autonn.pareto import DEFAULT_SPREAD, SPREADS, measured_front
from autonn.search import (BudgetUnreachable, evolve, hypervolume_2d, nsga2, pareto_front, random_search,
                           search_under_budget)
from autonn.spaces import get_search_space
from autonn.spaces.base import hashable_arch
from autonn.train import SeededShuffle, TrainConfig, evaluate_subnet, finetune, train_supernet
from tango.sampledata import make_cluttered_digits, make_digits

OPTIONS = {"resolutions": [24, 28, 32], "base_widths": [16, 32, 64, 128], "stem_width": 16, "stem_stride": 1}
# One recipe for the supernet and the standalone runs: the product's classification defaults,
# AdamW at 5e-3 (2e-3 left both sides under-trained at 8-16 epochs on ~1,250 images; measured in
# both, the standalone side too) and the label loss on distilled sub-networks.
RECIPE = TASK_DEFAULTS["classify"]
FRONT_SHARE = TrainSupernetParams.model_fields["predictor_front_share"].default  # the product's default
LR = RECIPE["lr"]
HV_MARGIN = 0.05  # the hypervolume reference: the nadir of every measured front point, pushed out by 5 % of each span
HV_EXTRA_GENERATIONS = (2, 9)  # shorter NSGA-II runs (about 300 and 1,000 queries) reported as extras
HV_POINTS = 12  # front points measured per run, both ends of its front and the rest by each rule in SPREADS
HV_ROUNDS = 7  # interleaved timing rounds for the measured fronts (median per network)
# How many near-front archs the search job measures for a front of HV_POINTS (its default).
HV_CANDIDATES = front_candidates(SearchParams(supernet_id="-", mode="front", n_points=HV_POINTS))


DATASETS = {"digits": "sklearn digits 32 px (1,797 images; 70/15/15 split)",
            "cluttered": "cluttered digits 32 px (make_cluttered_digits: {train} train / {val} val / {test} test "
                         "images; glyphs split 70/15/15)"}


def digits_loaders(space, batch_size: int, seed: int, *, dataset: str = "digits",  # noqa: ANN001, ANN201
                   images: int = 3000, test_images: int | None = None):
    if dataset == "cluttered":
        # Val half of train: it labels the accuracy predictor's pairs, whose ranking errors the
        # search exploits; 1,500 images keep its noise near half a point (600 gave 1.2). Test as
        # large as train by default: at ~93 % top-1, 1,000 test images put one standard error near
        # 0.8 point, and a supernet-vs-alone difference of two such estimates near 1.1; 3,000 cut
        # that to 0.65 (the test split is never trained or selected on, so size costs only time).
        sizes = {"train": images, "val": images // 2, "test": test_images or images}
        samples = {part: list(zip(*make_cluttered_digits(n, size=32, seed=seed, part=part), strict=True))
                   for part, n in sizes.items()}
    else:
        imgs, labels = make_digits(size=32, seed=seed)
        n = len(imgs)
        cut_test, cut_val = int(0.15 * n), int(0.30 * n)
        rows = list(zip(imgs, labels, strict=True))
        samples = {"test": rows[:cut_test], "val": rows[cut_test:cut_val], "train": rows[cut_val:]}
    return make_loaders(samples=samples, task="classify", classes=[str(d) for d in range(10)], space=space,
                        batch_size=batch_size, train_sampler=SeededShuffle(len(samples["train"]), seed=seed))


def latency_figures(space, threads: int, result: dict):  # noqa: ANN001, ANN201
    """Build the host latency table, score it on 30 held-out networks, and time those networks a
    second time (how well the machine agrees with itself; see common.timed_again)."""
    table = build_latency_table(space=space, num_classes=10, device="host", threads=threads, n_fit_networks=30)
    lat = evaluate_latency_model(table=table, space=space, num_classes=10, n_networks=30, seed=1)
    again = timed_again(table=table, space=space, first=lat, num_classes=10, seed=1)
    result.update(latency_mape=lat["mape"], latency_within_10pct=lat["within_10pct"],
                  latency_kendall_tau=lat["kendall_tau"], latency_noise_floor=lat["noise_floor"],
                  latency_timing_rounds=lat["timing_rounds"],
                  **{f"latency_{k}": v for k, v in again.items()}, latency_table_noise_floor=table.noise_floor,
                  latency_table_build_seconds=table.build_seconds, latency_n_networks=lat["n_networks"])
    print(f"latency: MAPE {lat['mape']:.1%}, within 10 % {lat['within_10pct']:.0%}, tau {lat['kendall_tau']:.3f}, "
          f"noise floor {lat['noise_floor']:.1%} over {lat['timing_rounds']} rounds (table {table.build_seconds} s); "
          f"tau between two timings of the same networks {again['kendall_tau_retest']:.3f}; against their mean: tau "
          f"{again['kendall_tau_both_timings']:.3f}, MAPE {again['mape_both_timings']:.1%}")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="cluttered")
    ap.add_argument("--images", type=int, default=3000, help="training images (cluttered only)")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--budgets", type=int, default=20)
    ap.add_argument("--standalone", type=int, default=10, help="architectures also trained alone")
    ap.add_argument("--alone-seeds", type=int, default=2,
                    help="training runs (seeds: initial weights, data order) of each architecture trained alone; "
                         "the comparison takes their mean test accuracy")
    ap.add_argument("--test-images", type=int, default=None, help="test images (cluttered only; default: --images)")
    ap.add_argument("--predictor-archs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hv-seeds", type=int, default=3, help="NSGA-II and random-search runs per side")
    ap.add_argument("--detection-results", default="nas_detect_r128_near,nas_detect_r128_near_seed1,"
                                                     "nas_detect_r128_near_seed2,nas_detect_r128_near_seed3,"
                                                     "nas_detect_r128_near_seed4",
                    help="bench/results/<name>.json files of bench/nas_detect.py whose detection gain is averaged")
    ap.add_argument("--result", default="nas", help="bench/results/<name>.json")
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)  # the supernet's and the standalone models' initial weights
    space = get_search_space("resnet_cls", **OPTIONS)
    loaders = digits_loaders(space, 64, args.seed, dataset=args.dataset, images=args.images,
                             test_images=args.test_images)
    cpu = torch.device("cpu")
    result: dict = {"space": space.name, "space_options": OPTIONS, "cardinality": space.cardinality(),
              "dataset": DATASETS[args.dataset].format(train=args.images, val=args.images // 2,
                                                       test=args.test_images or args.images),
              "epochs": args.epochs, "n_random": RECIPE["n_random"]}

    t0 = time.perf_counter()
    supernet = space.build_supernet(num_classes=10)
    # The label loss on distilled sub-networks: the teacher is weak for much of a short run (at 8
    # epochs it added 1.5-4 points to small sub-networks).
    # n_random: the product's default (each result records it; nas_amd_n3.json ran with 3).
    config = TrainConfig(epochs=args.epochs, lr=LR, optimizer="adamw", warmup_epochs=0.5, n_random=RECIPE["n_random"],
                         label_weight=RECIPE["label_weight"], seed=args.seed)
    trained = train_supernet(space=space, supernet=supernet, train_loader=loaders.train, val_loader=loaders.val,
                             config=config, device=cpu)
    result["supernet_train_seconds"] = round(time.perf_counter() - t0, 1)
    result["val_largest"], result["val_smallest"] = trained.final["val_largest"], trained.final["val_smallest"]
    print(f"supernet: {result['supernet_train_seconds']} s, val largest {result['val_largest']:.3f}, "
          f"smallest {result['val_smallest']:.3f}")

    rng = random.Random(args.seed + 1)
    # Two predictors from the same number of measured sub-networks: `uniform`, all of them random;
    # `front_aware` (the train_supernet job's default), the first 70 % of those random ones plus the
    # rest picked from Pareto fronts of the predictor so far against FLOPs (see
    # autonn.predictors.add_front_pairs). Both are scored below, side by side.
    archs = space.distinct_samples(args.predictor_archs, seed=args.seed + 1)
    measure_val = partial(measure_archs, space=space, supernet=supernet, calib_loader=loaders.calib,
                          val_loader=loaders.val, device=cpu)
    t = time.perf_counter()
    pairs = measure_val(archs=archs)
    result["predictor_pair_seconds"] = round((time.perf_counter() - t) / len(archs), 3)
    n_front = round(args.predictor_archs * FRONT_SHARE)
    predictors = {"uniform": fit_accuracy_predictor(space=space, pairs=pairs, seed=args.seed)}
    front_pairs = add_front_pairs(space=space, pairs=pairs[:len(pairs) - n_front], measure=measure_val,
                                  cost=FlopsTable(space=space, num_classes=10), n_front=n_front, seed=args.seed)
    predictors["front_aware"] = fit_accuracy_predictor(space=space, pairs=front_pairs, seed=args.seed)
    predictor = predictors["front_aware"]
    result["accuracy_predictors"] = {k: {m: p.report[m] for m in ("model", "rmse", "kendall_tau", "n_train", "n_test")}
                                     for k, p in predictors.items()}
    result["accuracy_predictor_rmse"] = predictor.report["rmse"]
    result["accuracy_predictor_kendall_tau"] = predictor.report["kendall_tau"]
    for k, p in predictors.items():
        print(f"accuracy predictor {k}: {p.report['model']}, RMSE {p.report['rmse']:.4f} and tau "
              f"{p.report['kendall_tau']:.3f} on its own held-out pairs")

    table = latency_figures(space, args.threads, result)

    # Budgets from just above the fastest *measured* sub-network to the largest one.
    fastest, largest = measured_ms(space, supernet, [space.smallest(), space.largest()], args.threads)
    budgets = list(np.linspace(fastest * 1.1, largest, args.budgets))
    seconds, seconds_full, same_best, shortfall, hits, rows = [], [], 0, [], 0, []
    measure = (lambda a: measured_ms(space, supernet, [a], args.threads)[0])
    for b in budgets:
        t = time.perf_counter()
        quick = evolve(space=space, accuracy=predictor.predict, latency=table, budget_ms=b, seed=args.seed)
        seconds.append(time.perf_counter() - t)
        # The same search run for all 500 generations (no patience): does stopping early lose anything?
        t = time.perf_counter()
        full = evolve(space=space, accuracy=predictor.predict, latency=table, budget_ms=b, seed=args.seed,
                      patience=None)
        seconds_full.append(time.perf_counter() - t)
        same_best += quick.predicted_metric >= full.predicted_metric
        shortfall.append(full.predicted_metric - quick.predicted_metric)
        try:
            res = search_under_budget(space=space, accuracy=predictor.predict, latency=table, measure=measure,
                                      budget_ms=b, device_name="host", seed=args.seed)
        except BudgetUnreachable as exc:  # counted as a miss: the budget was reachable when measured above
            rows.append({"budget_ms": b, "refused": str(exc), "hit": False})
            continue
        hit = res.measured_ms <= 1.05 * b
        hits += hit
        rows.append({"budget_ms": b, "predicted_ms": res.predicted_ms, "measured_ms": res.measured_ms,
                     "rounds": len(res.rounds), "predicted_metric": res.predicted_metric, "hit": bool(hit)})
    result.update(search_seconds_per_budget=float(np.median(seconds)), budget_hit_rate=hits / len(budgets),
                  search_seconds_per_budget_500_generations=float(np.median(seconds_full)),
                  search_patience_as_good_as_500_generations=f"{same_best}/{len(budgets)}",
                  # Predicted metric the plateau stop gave up against all 500 generations, per budget.
                  search_patience_shortfall=shortfall, budgets=rows)
    print(f"search: median {result['search_seconds_per_budget']:.2f} s per budget "
          f"({result['search_seconds_per_budget_500_generations']:.2f} s for all 500 generations, as good in "
          f"{same_best}/{len(budgets)}, at most {max(shortfall):.4f} lower); hit rate {hits}/{len(budgets)}")

    t = time.perf_counter()
    front = pareto_front(space=space, accuracy=predictor.predict, latency=table, n_points=10, seed=args.seed)
    result["front_seconds"] = time.perf_counter() - t

    def measured_fronts(fronts: list[list]) -> list[list[tuple[float, float]]]:
        """(test accuracy, ms) of every point of `fronts`. Every distinct arch among them is timed
        in the same interleaved rounds: timed one front after another, a load change between the
        calls moved one side's whole front (seen: one random front 20-30 % faster than every other)."""
        unique = {hashable_arch(p.arch): p.arch for points in fronts for p in points}
        ms = dict(zip(unique, measured_ms(space, supernet, list(unique.values()), args.threads, rounds=HV_ROUNDS),
                      strict=True))
        acc = {k: evaluate_subnet(space=space, supernet=supernet, arch=a, calib_loader=loaders.calib,
                                  val_loader=loaders.test, device=cpu) for k, a in unique.items()}
        return [[(acc[k], ms[k]) for k in map(hashable_arch, (p.arch for p in points))] for points in fronts]

    def nadir(pts) -> tuple[float, float]:  # noqa: ANN001
        """The worst accuracy and worst ms of the points, pushed out by HV_MARGIN of each span."""
        accs, mss = [a for a, _ in pts], [m for _, m in pts]
        return min(accs) - HV_MARGIN * (max(accs) - min(accs)), max(mss) + HV_MARGIN * (max(mss) - min(mss))

    def val_metric(archs: list) -> list[float]:
        return [m for _, m in measure_val(archs=archs)]

    def score(runs: list[dict]) -> dict:
        """Hypervolumes of measured fronts, all scored against one reference: the nadir of every
        measured point. The gain is the ratio of the mean hypervolumes."""
        out: dict = {}
        for side in ("evo", "random"):  # how far the predictor over-rates the points each side picked
            out[f"over_rating_{side}"] = float(np.mean([pm - a for r in runs for (a, _), (pm, _) in
                                                        zip(r[side], r[side + "_chosen"], strict=True)]))
        for kind in ("", "_predicted", "_acc_only"):
            ref = nadir([pt for r in runs for pt in r["evo" + kind] + r["random" + kind]])
            hv_e = [hypervolume_2d(r["evo" + kind], ref) for r in runs]
            hv_r = [hypervolume_2d(r["random" + kind], ref) for r in runs]
            out.update({f"gain{kind}": float(np.mean(hv_e) / np.mean(hv_r) - 1.0), f"reference{kind}": list(ref),
                        f"hypervolume_evo{kind}": hv_e, f"hypervolume_random{kind}": hv_r,
                        # How much random search's own hypervolume varies between seeds (std / mean).
                        f"random_cv{kind}": float(np.std(hv_r) / np.mean(hv_r))})
        out["runs"] = [{k: v for k, v in r.items() if not k.endswith(("_predicted", "_acc_only"))} for r in runs]
        return out

    def compare(generations: int, seeds: list[int], predictor=predictor, candidates: int = 0) -> dict:
        """NSGA-II against random search at NSGA-II's query count, one run of each per seed, both
        fronts measured (test accuracy in the supernet, timed latency) and scored (`score`); the
        same on predicted values (whole fronts) shows the search itself. `candidates` > 0: each
        side's front is drawn from that many of its archs nearest its predicted front, measured on
        the val split (measured_front); its "predicted" values are then those val metrics, the
        front the search hands back. Each side's HV_POINTS points are chosen from its front by
        every rule in SPREADS, all measured together; the top level is DEFAULT_SPREAD's,
        `by_spread` holds each."""
        runs: dict[str, list[dict]] = {rule: [] for rule in SPREADS}
        for seed in seeds:
            evo = nsga2(space=space, accuracy=predictor.predict, latency=table, seed=seed, generations=generations)
            rand = random_search(space=space, accuracy=predictor.predict, latency=table, queries=evo.queries,
                                 seed=seed)
            full = {"evo": evo.front, "random": rand.front}
            if candidates:
                full = {side: measured_front(candidates=r.archive, metric=val_metric, n_eval=candidates)
                        for side, r in (("evo", evo), ("random", rand))}
            chosen = {(rule, side): SPREADS[rule](full[side], HV_POINTS) for rule in SPREADS for side in full}
            measured = dict(zip(chosen, measured_fronts(list(chosen.values())), strict=True))
            for rule in SPREADS:
                run: dict = {"seed": seed, "queries": evo.queries}
                for side in ("evo", "random"):
                    points = chosen[rule, side]
                    run[side] = measured[rule, side]
                    run[side + "_chosen"] = [(p.metric, p.ms) for p in points]
                    run[side + "_predicted"] = [(p.metric, p.ms) for p in (points if candidates else full[side])]
                    # Test accuracy with the *predicted* ms: the accuracy side alone, free of timing noise.
                    run[side + "_acc_only"] = [(a, ms) for (a, _), (_, ms) in
                                               zip(run[side], run[side + "_chosen"], strict=True)]
                runs[rule].append(run)
        by_spread = {rule: score(rule_runs) for rule, rule_runs in runs.items()}
        return {"queries": int(np.mean([r["queries"] for r in runs[DEFAULT_SPREAD]])), "seeds": seeds,
                "candidates": candidates, "spread": DEFAULT_SPREAD, **by_spread[DEFAULT_SPREAD],
                "by_spread": {rule: {k: v for k, v in out.items() if k != "runs"} if rule == DEFAULT_SPREAD else out
                              for rule, out in by_spread.items()}}

    seeds = [args.seed + i for i in range(args.hv_seeds)]
    # The NSGA-II default (100 x 100), the front the search job hands back: the headline figure.
    rerank_cmp = compare(100, seeds, candidates=HV_CANDIDATES)
    main_cmp = compare(100, seeds)  # the same, fronts of predicted values (the job's front_candidates 0)
    uniform_cmp = compare(100, seeds, predictor=predictors["uniform"])  # the same with the uniform predictor
    by_queries = {str(main_cmp["queries"]): main_cmp["gain"]}
    by_queries_predicted = {str(main_cmp["queries"]): main_cmp["gain_predicted"]}
    for gens in HV_EXTRA_GENERATIONS:  # extras: shorter NSGA-II runs (one seed), random search at their query counts
        short = compare(gens, seeds[:1])
        by_queries[str(short["queries"])] = short["gain"]
        by_queries_predicted[str(short["queries"])] = short["gain_predicted"]
    result.update(hypervolume_gain_vs_random=rerank_cmp["gain"], front_spread=DEFAULT_SPREAD,
                  **{f"hypervolume_gain_vs_random_{rule}_spread{kind}": cmp["by_spread"][rule]["gain"]
                     for rule in SPREADS for kind, cmp in (("", rerank_cmp), ("_predictor_only", main_cmp))},
                  hypervolume_gain_vs_random_as_reported=rerank_cmp["gain_predicted"],
                  hypervolume_random_cv=rerank_cmp["random_cv"], front_candidates=HV_CANDIDATES,
                  hypervolume_fronts_reranked=rerank_cmp,
                  hypervolume_gain_vs_random_predictor_only=main_cmp["gain"],
                  hypervolume_gain_vs_random_predicted=main_cmp["gain_predicted"],
                  hypervolume_random_cv_predictor_only=main_cmp["random_cv"], hypervolume_seeds=len(seeds),
                  hypervolume_reference=f"nadir of every measured front point, + {HV_MARGIN:.0%} of each span",
                  hypervolume_gain_by_queries=by_queries, hypervolume_gain_by_queries_predicted=by_queries_predicted,
                  hypervolume_fronts=main_cmp, queries_each=main_cmp["queries"], front_points=len(front),
                  hypervolume_gain_vs_random_uniform_predictor=uniform_cmp["gain"],
                  hypervolume_gain_vs_random_uniform_predictor_predicted=uniform_cmp["gain_predicted"],
                  hypervolume_gain_vs_random_acc_only=main_cmp["gain_acc_only"],
                  hypervolume_gain_vs_random_uniform_predictor_acc_only=uniform_cmp["gain_acc_only"],
                  predictor_over_rating={name: {side: cmp[f"over_rating_{side}"] for side in ("evo", "random")}
                                         for name, cmp in (("front_aware", main_cmp), ("uniform", uniform_cmp))},
                  hypervolume_fronts_uniform_predictor=uniform_cmp)
    spreads = ", ".join(f"{rule} {cmp['gain']:+.1%}" for rule, cmp in rerank_cmp["by_spread"].items())
    print(f"hypervolume NSGA-II vs random, fronts drawn from {HV_CANDIDATES} archs measured on the supernet: "
          f"measured {rerank_cmp['gain']:+.1%} ({DEFAULT_SPREAD} spread; by spread: {spreads}; "
          f"random's seed-to-seed CV {rerank_cmp['random_cv']:.1%}), on the "
          f"fronts' own val metrics {rerank_cmp['gain_predicted']:+.1%}; over-rating of the points picked "
          f"(evo / random) {rerank_cmp['over_rating_evo']:+.3f} / {rerank_cmp['over_rating_random']:+.3f}")
    print(f"front: {result['front_seconds']:.2f} s for {len(front)} points; hypervolume NSGA-II vs random at "
          f"{main_cmp['queries']} queries over {len(seeds)} seeds, fronts of predicted values: measured "
          f"{main_cmp['gain']:+.1%} (random's "
          f"seed-to-seed CV {main_cmp['random_cv']:.1%}), predicted {main_cmp['gain_predicted']:+.1%}; by queries "
          f"measured {', '.join(f'{q}: {g:+.1%}' for q, g in by_queries.items())}, predicted "
          f"{', '.join(f'{q}: {g:+.1%}' for q, g in by_queries_predicted.items())}; with the uniform predictor: "
          f"measured {uniform_cmp['gain']:+.1%}, predicted {uniform_cmp['gain_predicted']:+.1%}; test accuracy "
          f"with predicted ms: {main_cmp['gain_acc_only']:+.1%} front-aware, {uniform_cmp['gain_acc_only']:+.1%} "
          f"uniform; over-rating of the points picked (evo / random): front-aware {main_cmp['over_rating_evo']:+.3f} / "
          f"{main_cmp['over_rating_random']:+.3f}, uniform {uniform_cmp['over_rating_evo']:+.3f} / "
          f"{uniform_cmp['over_rating_random']:+.3f}")

    picks = [p.arch for p in sorted(front, key=lambda p: p.ms)][: args.standalone]
    while len(picks) < args.standalone:
        picks.append(space.sample(rng))
    # Both sides: final weights, test accuracy; the standalone runs validate on loaders.val (the test
    # set is never looked at while training either side). Each architecture is trained alone
    # --alone-seeds times (initial weights and data order from the seed): one run's accuracy swings
    # by a point or more from the seed alone (on the AMD machine one of them came out 4.5 points
    # under its supernet sub-network), and the claim is about the architecture, not one draw.
    train = loaders.train

    def alone_loader(k: int) -> torch.utils.data.DataLoader:
        """loaders.train with seed args.seed + k for its order (k = 0: the same order as loaders.train)."""
        return torch.utils.data.DataLoader(train.dataset, batch_size=train.batch_size, drop_last=train.drop_last,
                                           sampler=SeededShuffle(len(train.dataset), seed=args.seed + k),
                                           collate_fn=train.collate_fn)

    pairs_2pt, within, within_per_seed = [], 0, [0] * args.alone_seeds
    for arch in picks:
        t = time.perf_counter()
        in_super = evaluate_subnet(space=space, supernet=supernet, arch=arch, calib_loader=loaders.calib,
                                   val_loader=loaders.test, device=cpu)
        runs = []
        for k in range(args.alone_seeds):
            torch.manual_seed(args.seed + k)
            alone = space.build_supernet(num_classes=10).extract(arch).train()
            alone_val, _ = finetune(space=space, model=alone, arch=arch, train_loader=alone_loader(k),
                                    val_loader=loaders.val, device=cpu,
                                    config=TrainConfig(epochs=args.epochs, lr=LR, optimizer="adamw",
                                                       warmup_epochs=0.5, seed=args.seed + k))
            runs.append({"test": float(space.evaluate(alone, loaders.test, arch=arch, device=cpu)), "val": alone_val})
            within_per_seed[k] += abs(in_super - runs[-1]["test"]) <= 0.02
        alone_acc = float(np.mean([r["test"] for r in runs]))
        within += abs(in_super - alone_acc) <= 0.02
        pairs_2pt.append({"arch": arch, "supernet": in_super, "alone": alone_acc, "alone_runs": runs,
                          "alone_seconds": round(time.perf_counter() - t, 1)})
        seeds = ", ".join(f"{r['test']:.3f}" for r in runs)
        print(f"supernet {in_super:.3f} vs alone {alone_acc:.3f} ({seeds}) "
              f"at {space.input_size(arch)} px, depths {arch.get('depths')}", flush=True)
    if picks:  # --standalone 0 skips this part (about 15 minutes a seed here)
        result.update(subnets_within_2pts=within, subnets_compared=len(picks), subnets_vs_alone=pairs_2pt,
                      alone_seeds=args.alone_seeds, subnets_within_2pts_per_alone_seed=within_per_seed,
                      subnets_supernet_minus_alone_mean=float(np.mean([p["supernet"] - p["alone"] for p in pairs_2pt])),
                      alone_seed_spread_mean=float(np.mean([np.ptp([r["test"] for r in p["alone_runs"]])
                                                            for p in pairs_2pt])))
        print(f"supernet vs alone ({args.epochs} epochs, mean of {args.alone_seeds} runs): {within}/{len(picks)} "
              f"within 2 points (single runs: {within_per_seed}); mean difference "
              f"{result['subnets_supernet_minus_alone_mean']:+.3f}; seed-to-seed spread of a run "
              f"{result['alone_seed_spread_mean']:.3f}")
    detection = {}
    for name in filter(None, args.detection_results.split(",")):
        d = json.loads((RESULTS / f"{name}.json").read_text())
        detection[name] = {k: d.get(k) for k in ("detection_latency_gain_at_equal_map", "headline_choice",
                                                  "latency_gain_per_family_member", "commit")}
        detection[name]["machine"] = d.get("machine", {}).get("cpu")
    if detection:
        result.update(detection_latency_gain_at_equal_map=float(np.mean(
            [d["detection_latency_gain_at_equal_map"] for d in detection.values()])), detection_runs=detection)
    write_result(args.result, result)


if __name__ == "__main__":
    main()
