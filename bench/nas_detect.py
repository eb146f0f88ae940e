"""Detection NAS on this CPU: searched sub-networks vs a uniformly scaled n/s/m family.

    python bench/nas_detect.py [--epochs 30] [--images 600] [--budget-factors 0.8,1.0] [--resolutions 64,96]

On the generated shapes set (seeded, offline): train the YOLO-style supernet, fit its accuracy
predictor, build the host latency table, time the width/depth-scaled n/s/m family, then ask the
product's budgeted search (`search_under_budget`: predictors, a shortlist per input size re-ranked
on the supernet's val split as the search job does, then measured on this CPU) for the best
sub-network under each family member's latency (as the search measures it, just before) times each
of `--budget-factors`: what a user with that member's budget (or a tighter one) gets. Each budget
is searched three ways, side by side: choosing on the supernet's val split; (the search job's
detection default) fine-tuning the best of each input size `--refine-epochs` epochs and choosing on
their val mAP; and that default with one latency reading per pick (`finetune_once`: no near-budget
repeats; `--no-once` leaves it out). Every network,
family and searched, is then made two ways: as Tango delivers it (weights from the supernet, the
finetune job's defaults) and trained alone from scratch (same epochs, optimizer, data); then
measured: mAP50-95 on the test split (15 % of `--images` plus `--test-images` more), and ONNX
Runtime latency, all of them timed together in interleaved rounds at the end. The figure
(delivered; `..._trained_alone` beside it), for the search job's default choice (`by_choice` holds
each): at each family member's mAP, how much less latency the cheapest searched network reaching
that mAP needs (`detection_latency_gain_at_equal_map`, the mean over family members a searched
network reaches; null when none does); beside it, the mAP the best searched network within each
member's latency adds. `--load DIR` takes a trained supernet instead (DIR/supernet.pt, and the
recipe it was trained with from DIR/config.json where the saver wrote one: `--save` here, or
bench/sandwich.py's). Last, the front a search job hands back by default is timed on this
supernet: predicted, and drawn from the archs near it measured on the val split
(`front_seconds_*`). Writes bench/results/nas_detect.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from common import measured_ms, write_result

from autonn.data import make_loaders
from autonn.delivery import Delivered, deliver_subnet
from autonn.flops import FlopsTable
from autonn.jobs.finetune import LR_BY_TASK, FinetuneParams
from autonn.jobs.search import REFINE_EPOCHS_BY_TASK, SearchParams, front_candidates
from autonn.jobs.train_supernet import TASK_DEFAULTS, TrainSupernetParams
from autonn.latency import build_latency_table, measure_network_ms, network_input_shape
from autonn.predictors import fit_accuracy_predictor, measure_archs, predictor_pairs
from autonn.search import BudgetUnreachable, pareto_front, search_under_budget
from autonn.spaces import get_search_space
from autonn.train import SeededShuffle, TrainConfig, evaluate_subnet, finetune, train_supernet
from tango.sampledata import SHAPE_CLASSES, make_shapes

OPTIONS = {"resolutions": [64, 96], "backbone_widths": [16, 32, 48, 64], "neck_widths": [48, 32, 48, 64]}
# One recipe for the supernet and every network trained alone. AdamW at 4e-3 for 30 epochs on 420
# training images: the "m" family member reached 0.49 test mAP50-95 at 96 px (2e-3: "n" 0.23; the
# earlier 6 epochs on 168 images at 2e-3 learnt nothing, mAP 0.02).
LR = 4e-3
FRONT_SHARE = TrainSupernetParams.model_fields["predictor_front_share"].default
DETECT = TASK_DEFAULTS["detect"]


def shapes_loaders(space, *, images: int, seed: int, test_images: int = 0):  # noqa: ANN001, ANN201
    """The generated shapes set at the space's largest size, split 15 % test, 15 % val, 70 % train;
    `test_images` more images (the ones generated after `images`, so train and val stay as they
    were) join the test split."""
    rows = make_shapes(images + test_images, size=max(space.resolutions), seed=seed)
    n = int(0.15 * images)
    samples = {"test": rows[:n] + rows[images:], "val": rows[n:2 * n], "train": rows[2 * n:images]}
    return make_loaders(samples=samples, task="detect", classes=list(SHAPE_CLASSES), space=space, batch_size=16,
                        train_sampler=SeededShuffle(len(samples["train"]), seed=seed))


def recipe(*, epochs: int, seed: int, n_random: int, smallest_size: str) -> TrainConfig:
    """The one training recipe of this bench (supernet and networks trained alone)."""
    return TrainConfig(epochs=epochs, lr=LR, optimizer="adamw", weight_decay=5e-4, grad_clip=10.0, n_random=n_random,
                       smallest_size=smallest_size, seed=seed, warmup_epochs=1.0, val_batches=4)


def family(space) -> dict[str, dict]:  # noqa: ANN001
    """Uniform width/depth scaling, as YOLOv8's n/s/m differ, at the largest input size."""
    res = max(space.resolutions)
    def arch(bw: float, nw: float, depth: int) -> dict:
        return {"resolution": res, "widths": [bw] * 4 + [nw] * 4, "depths": [depth] * 8}
    return {"n": arch(0.25, 0.5, 1), "s": arch(0.5, 0.75, 1), "m": arch(0.75, 1.0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--test-images", type=int, default=1500,
                    help="more images for the test split only (90 test images could not order the family)")
    ap.add_argument("--resolutions", default=",".join(map(str, OPTIONS["resolutions"])),
                    help="input sizes of the search space, comma-separated; the family uses the largest")
    ap.add_argument("--budget-factors", default="0.8,1.0",
                    help="budgets searched per family member, as fractions of its measured latency")
    ap.add_argument("--predictor-archs", type=int, default=100)
    ap.add_argument("--front-share", type=float, default=FRONT_SHARE,
                    help="share of --predictor-archs picked from the predictor's fronts (the job's default)")
    ap.add_argument("--per-size", type=int, default=SearchParams.model_fields["rerank_per_size"].default,
                    help="shortlisted sub-networks per input size, measured on the supernet (0: the predictor's pick)")
    ap.add_argument("--refine-epochs", type=int, default=REFINE_EPOCHS_BY_TASK["detect"],
                    help="the search job's finalists fine-tuned this many epochs (its detection default); every "
                         "budget is searched both ways, choosing on the supernet and choosing fine-tuned "
                         "(0: only the first)")
    ap.add_argument("--n-random", type=int, default=DETECT["n_random"],
                    help="random sub-networks per supernet step (the train_supernet job's detection default)")
    ap.add_argument("--smallest-size", choices=["min", "random"], default=DETECT["smallest_size"],
                    help="the smallest sub-network's input size in the sandwich (the job's detection default)")
    ap.add_argument("--load", help="a folder with a supernet.pt (from --save or bench/sandwich.py) instead of training")
    ap.add_argument("--once", action=argparse.BooleanOptionalAction, default=True,
                    help="also search choosing fine-tuned with one measurement per pick (no near-budget repeats)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="a folder to keep the trained supernet and the predictor's pairs in")
    ap.add_argument("--result", default="nas_detect", help="bench/results/<name>.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    # The supernet's initial weights: unseeded, two runs of the same commit gave val mAP50-95
    # 0.362 and 0.515 for the largest sub-network.
    torch.manual_seed(args.seed)
    cpu = torch.device("cpu")
    options = {**OPTIONS, "resolutions": [int(r) for r in args.resolutions.split(",")]}
    space = get_search_space("yolo_det", **options)
    loaders = shapes_loaders(space, images=args.images, seed=args.seed, test_images=args.test_images)
    nc = len(SHAPE_CLASSES)
    config = recipe(epochs=args.epochs, seed=args.seed, n_random=args.n_random, smallest_size=args.smallest_size)
    result: dict = {"space": space.name, "space_options": options, "lr": LR, "cardinality": space.cardinality(),
                    "dataset": f"generated shapes, {args.images} images at {max(space.resolutions)} px",
                    "test_images": len(loaders.test.dataset), "epochs": args.epochs}

    supernet = space.build_supernet(num_classes=nc)
    if args.load:
        supernet.load_state_dict(torch.load(Path(args.load) / "supernet.pt"))
        result["supernet"] = f"loaded from {args.load}"
        made = Path(args.load) / "config.json"  # the recipe it was trained with, where the saver kept it
        result["supernet_config"] = json.loads(made.read_text()) if made.exists() else None
        result["supernet_val_largest"] = evaluate_subnet(space=space, supernet=supernet, arch=space.largest(),
                                                         calib_loader=loaders.calib, val_loader=loaders.val, device=cpu)
        print(f"supernet loaded from {args.load}")
    else:
        t0 = time.perf_counter()
        trained = train_supernet(space=space, supernet=supernet, train_loader=loaders.train, val_loader=loaders.val,
                                 config=config, device=cpu)
        result["supernet_train_seconds"] = round(time.perf_counter() - t0, 1)
        result["supernet_val_largest"] = trained.final["val_largest"]
        result["supernet_config"] = asdict(config)
        print(f"supernet: {result['supernet_train_seconds']} s, val mAP largest {trained.final['val_largest']:.3f}")

    # The predictor's pairs as the train_supernet job picks them (the family members among the
    # random ones): random sub-networks, then the job's share from the predictor's own fronts
    # against FLOPs, where a fit on random pairs extrapolates.
    measure = partial(measure_archs, space=space, supernet=supernet, calib_loader=loaders.calib,
                      val_loader=loaders.val, device=cpu)
    pairs = predictor_pairs(space=space, measure=measure, cost=FlopsTable(space=space, num_classes=nc),
                            n_archs=args.predictor_archs, front_share=args.front_share, seed=args.seed,
                            first=list(family(space).values()))
    predictor = fit_accuracy_predictor(space=space, pairs=pairs, seed=args.seed)
    if args.save:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(supernet.state_dict(), out / "supernet.pt")
        if result["supernet_config"] is not None:
            (out / "config.json").write_text(json.dumps(result["supernet_config"]))
        (out / "pairs.json").write_text(json.dumps(pairs))
    print("timing the host latency table and the family", flush=True)
    table = build_latency_table(space=space, num_classes=nc, device="host", threads=1, n_fit_networks=20)
    result.update(accuracy_predictor=predictor.report, latency_table_build_seconds=table.build_seconds)
    result.update(accuracy_predictor_n_archs=len(pairs), predictor_front_share=args.front_share,
                  search_rerank_per_size=args.per_size)

    members = family(space)
    # The space's smallest sub-network at each input size, timed with the family: a member that is
    # that network can only be beaten at a smaller input size (at 64,96 px "n" is the 96 px one).
    floor = {r: {**space.validate(space.smallest()), "resolution": r} for r in space.resolutions}
    timed_ms = measured_ms(space, supernet, [*members.values(), *floor.values()], 1, rounds=7)
    fam_ms = dict(zip(members, timed_ms[:len(members)], strict=True))
    result.update(space_smallest_ms_per_resolution=dict(zip(floor, timed_ms[len(members):], strict=True)),
                  family_members_smallest_at_their_resolution=[
                      name for name, a in members.items() if space.arch_key(a) == space.arch_key(floor[a["resolution"]])])
    factors = [float(f) for f in args.budget_factors.split(",")]
    tuned = FinetuneParams.model_fields  # the finetune job's defaults: what Tango hands a user
    ft = TrainConfig(epochs=tuned["epochs"].default, lr=tuned["lr"].default or LR_BY_TASK["detect"],
                     optimizer=tuned["optimizer"].default, seed=args.seed)
    made: dict[tuple, Delivered] = {}  # (arch key, epochs) -> Delivered: the search's fine-tunes are the deliveries

    def delivered(arch: dict, epochs: int) -> Delivered:
        key = (space.arch_key(arch), epochs)
        if key not in made:
            made[key] = deliver_subnet(space=space, supernet=supernet, arch=arch, loaders=loaders, device=cpu,
                                       config=replace(ft, epochs=epochs),
                                       distill=tuned["distill"].default)
        return made[key]

    # The search job's default: shortlist per input size, keep the best on the supernet's val split,
    # and (detection) fine-tune the best of each size and keep the best fine-tuned on val. Both ways.
    def val_map(archs: list[dict]) -> list[float]:
        return [m for _, m in measure(archs=archs)]

    rerank = val_map if args.per_size else None

    def refine(archs: list[dict]) -> list[float]:
        return [delivered(a, args.refine_epochs).val for a in archs]

    # Each choice: (refine, near-budget repeats). "finetune_once" is the default without the
    # repeated near-budget measurements, side by side with it (`--no-once` leaves it out).
    repeats = SearchParams.model_fields["near_budget_repeats"].default
    tuned_choices = {"finetune_once": (refine, 0), "finetune": (refine, repeats)} if args.once else \
        {"finetune": (refine, repeats)}
    choices = {"supernet": (None, repeats), **(tuned_choices if args.refine_epochs and args.per_size else {})}
    picks: dict[str, dict] = {}
    budgets = []

    def device_ms(arch: dict) -> float:
        """The search's own measurement: the network alone, now."""
        return measured_ms(space, supernet, [arch], 1)[0]

    budget_base = {}
    for name, arch in members.items():
        # The budget is the member as the search measures it, just before its searches: its timing
        # in the group above ran 13-21 % under the family's final timing on the Intel host
        # (nas_detect_r128*.json, 0-9 % on AMD), while the picks' search-time readings were 0.95-1.06
        # of their final ones (seed 0); so the member itself did not fit its own 1.0 budget.
        ms = budget_base[name] = float(np.median([device_ms(arch) for _ in range(3)]))
        for factor in factors:
            for choice, (refined, near_repeats) in choices.items():
                t = time.perf_counter()
                try:
                    res = search_under_budget(space=space, accuracy=predictor.predict, latency=table,
                                              measure=device_ms,
                                              budget_ms=factor * ms, device_name="host", seed=args.seed,
                                              rerank=rerank, per_size=args.per_size, refine=refined,
                                              repeats=near_repeats)
                except BudgetUnreachable as exc:
                    budgets.append({"member": name, "factor": factor, "budget_ms": factor * ms, "choice": choice,
                                    "refused": str(exc)})
                    continue
                seconds = round(time.perf_counter() - t, 1)
                pick = picks.setdefault(space.arch_key(res.arch), {"arch": res.arch, "picked_by": set()})
                pick["picked_by"].add(choice)
                # What the predictor promised against the supernet's own val mAP for the pick.
                supernet_map = res.measured_metric
                if supernet_map is None:
                    supernet_map = measure(archs=[res.arch])[0][1]
                budgets.append({"member": name, "factor": factor, "budget_ms": factor * ms, "choice": choice,
                                "arch": res.arch, "search_seconds": seconds, "predicted_map": res.predicted_metric,
                                "supernet_val_map": supernet_map, "finetuned_val_map": res.refined_metric,
                                "predicted_ms": res.predicted_ms, "measured_ms": res.measured_ms,
                                "rounds": [{"resolution": space.input_size(r.arch), "scale": r.scale,
                                            "predicted_ms": r.predicted_ms, "measured_ms": r.measured_ms,
                                            "timings_ms": r.timings_ms,
                                            "supernet_val_map": r.measured_metric,
                                            "finetuned_val_map": r.refined_metric} for r in res.rounds],
                                "shortlist": [{"resolution": space.input_size(c.arch),
                                               "predicted_map": c.predicted_metric,
                                               "supernet_val_map": c.measured_metric,
                                               "finetuned_val_map": c.refined_metric} for c in res.candidates]})
                fine = float("nan") if res.refined_metric is None else res.refined_metric
                print(f"budget {factor:.2f} x {name} = {factor * ms:.2f} ms, chosen on the {choice}: predicted mAP "
                      f"{res.predicted_metric:.3f} (supernet val {supernet_map:.3f}, fine-tuned val {fine:.3f}), "
                      f"{res.measured_ms:.2f} ms measured, {space.input_size(res.arch)} px, {seconds} s", flush=True)
    result.update(family_measured_ms_before_training=fam_ms, family_measured_ms_at_search=budget_base,
                  budget_factors=factors, budgets=budgets,
                  refine_epochs=args.refine_epochs, choices=list(choices),
                  near_budget_repeats={c: r for c, (_, r) in choices.items()})

    def train_alone(arch: dict) -> dict:
        model = space.build_supernet(num_classes=nc).extract(arch).train()
        t = time.perf_counter()
        finetune(space=space, model=model, arch=arch, train_loader=loaders.train,
                 val_loader=loaders.val, config=config, device=cpu)
        mp = float(space.evaluate(model.eval(), loaders.test, arch=arch, device=cpu))
        seconds = round(time.perf_counter() - t, 1)
        print(f"trained alone in {seconds:.0f} s: mAP50-95 {mp:.3f}, {arch}", flush=True)
        return {"arch": arch, "map50_95": mp, "train_seconds": seconds, "model": model}

    def deliver(arch: dict) -> float:
        """Test mAP50-95 of `arch` as the product's finetune job makes it (its defaults)."""
        return float(space.evaluate(delivered(arch, ft.epochs).model, loaders.test, arch=arch, device=cpu))

    fam = {name: train_alone(arch) for name, arch in family(space).items()}
    searched = [{**train_alone(p["arch"]), "picked_by": sorted(p["picked_by"])} for p in picks.values()]
    for row in [*fam.values(), *searched]:
        row["delivered_map50_95"] = deliver(row["arch"])
        print(f"from the supernet, fine-tuned: mAP50-95 {row['delivered_map50_95']:.3f}, {row['arch']}", flush=True)
    # Every trained network timed in the same interleaved rounds, so drift hits all alike.
    print("timing every trained network", flush=True)
    trained = [*fam.values(), *searched]
    timed = measure_network_ms(models={str(i): (r.pop("model"), network_input_shape(space, r["arch"]))
                                       for i, r in enumerate(trained)}, threads=1, rounds=7)
    for i, row in enumerate(trained):
        row["latency_ms"], row["latency_noise"] = timed[str(i)]["median_ms"], timed[str(i)]["noise"]
    for name, row in fam.items():
        print(f"family {name}: mAP {row['delivered_map50_95']:.3f} delivered, {row['map50_95']:.3f} trained alone, "
              f"at {row['latency_ms']:.2f} ms")
    for row in searched:
        print(f"searched ({', '.join(row['picked_by'])}): mAP {row['delivered_map50_95']:.3f} delivered, "
              f"{row['map50_95']:.3f} trained alone, at {row['latency_ms']:.2f} ms")

    def compare(key: str, choice: str) -> tuple[dict, dict, float | None]:
        """Per family member: the latency a searched network (picked by `choice`) reaching its mAP
        saves, and the mAP the best searched network within its latency adds; the mean of the
        defined savings."""
        gains, map_gains = {}, {}
        mine = [s for s in searched if choice in s["picked_by"]]
        for name, row in fam.items():
            # A family member that learnt nothing (mAP ~0) offers no level to compare at.
            reaching = [s["latency_ms"] for s in mine if s[key] >= row[key]]
            gains[name] = 1.0 - min(reaching) / row["latency_ms"] if reaching and row[key] > 0.01 else None
            within = [s[key] for s in mine if s["latency_ms"] <= row["latency_ms"]]
            map_gains[name] = max(within) - row[key] if within else None
        defined = [g for g in gains.values() if g is not None]
        return gains, map_gains, float(np.mean(defined)) if defined else None

    # The headline is the search job's default choice; every choice is recorded beside it.
    default = list(choices)[-1]
    by_choice = {c: {"delivered": compare("delivered_map50_95", c), "trained_alone": compare("map50_95", c)}
                 for c in choices}
    (gains, map_gains, mean_gain), (gains_alone, map_gains_alone, mean_alone) = by_choice[default].values()
    result.update(family=fam, searched=searched, headline_choice=default, latency_gain_per_family_member=gains,
                  map_gain_at_equal_latency_per_family_member=map_gains, detection_latency_gain_at_equal_map=mean_gain,
                  latency_gain_per_family_member_trained_alone=gains_alone,
                  map_gain_at_equal_latency_per_family_member_trained_alone=map_gains_alone,
                  detection_latency_gain_at_equal_map_trained_alone=mean_alone,
                  by_choice={c: {kind: {"latency_gain_per_family_member": g, "map_gain_at_equal_latency": m,
                                        "latency_gain_at_equal_map": mean} for kind, (g, m, mean) in v.items()}
                             for c, v in by_choice.items()},
                  finetune={"epochs": ft.epochs, "lr": ft.lr, "optimizer": ft.optimizer,
                            "distill": tuned["distill"].default})
    for c, v in by_choice.items():
        (g, m, mean), (ga, ma, mean_a) = v.values()
        print(f"chosen on the {c}, delivered (supernet weights + the finetune job's recipe): latency gain at equal "
              f"mAP {g} (mean {mean}), mAP gain at equal latency {m}")
        print(f"chosen on the {c}, trained alone: latency gain at equal mAP {ga} (mean {mean_a}), mAP gain at equal "
              f"latency {ma}")
    # What a front search job costs on this supernet, timed last so that nothing above changes: the
    # predicted front, and the job's default, 3 x n_points archs near it measured on the val split.
    points = SearchParams.model_fields["n_points"].default
    front_eval = front_candidates(SearchParams(supernet_id="-", mode="front", n_points=points))
    t = time.perf_counter()
    pareto_front(space=space, accuracy=predictor.predict, latency=table, n_points=points, seed=args.seed)
    predicted_s = time.perf_counter() - t
    t = time.perf_counter()
    drawn = pareto_front(space=space, accuracy=predictor.predict, latency=table, n_points=points, seed=args.seed,
                         rerank=val_map, candidates=front_eval)
    result.update(front_points=points, front_candidates=front_eval, front_seconds_predicted=round(predicted_s, 2),
                  front_seconds_measured=round(time.perf_counter() - t, 2), front_points_measured=len(drawn))
    print(f"front of {points} points: {predicted_s:.1f} s predicted, {result['front_seconds_measured']:.1f} s drawn "
          f"from {front_eval} archs measured on the val split ({len(drawn)} points)")
    write_result(args.result, result)


if __name__ == "__main__":
    main()
