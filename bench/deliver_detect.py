"""Fine-tune recipes for delivering detection sub-networks, side by side, on this CPU.

    python bench/deliver_detect.py --load DIR [--recipes 5:2e-4:distill,5:1e-3:labels] [--random 3]

DIR holds a supernet.pt of bench/nas_detect.py's space (from its --save, or bench/sandwich.py's).
Each sub-network (the n/s/m family and `--random` random ones) is delivered as the finetune job
delivers it (`autonn.delivery.deliver_subnet`: weights from the supernet, BN recalibrated, fine-
tuned, the fine-tune kept only if val improves) with each recipe `epochs:lr:distill|labels`
("distill" learns from the supernet's largest sub-network, "labels" from the boxes), then scored:
mAP50-95 on the test split. The first recipe is the finetune job's default. Beside them: each
network as the supernet holds it (no fine-tuning), and, for the family, the mAP the same
architectures reached trained alone for 30 epochs in bench/results/nas_detect.json (same data,
split and seed; another run). Writes bench/results/deliver_detect.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, write_result
from nas_detect import OPTIONS, family, shapes_loaders

from autonn.delivery import deliver_subnet
from autonn.jobs.finetune import LR_BY_TASK, FinetuneParams
from autonn.spaces import get_search_space
from autonn.train import TrainConfig
from tango.sampledata import SHAPE_CLASSES

JOB = FinetuneParams.model_fields
DEFAULT = f"{JOB['epochs'].default}:{LR_BY_TASK['detect']:g}:{'distill' if JOB['distill'].default else 'labels'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load", required=True, help="a folder with supernet.pt")
    ap.add_argument("--recipes", default=f"{DEFAULT},5:2e-4:distill,5:1e-3:distill,5:1e-3:labels,10:1e-3:labels",
                    help="epochs:lr:distill|labels, comma-separated; the first is the finetune job's default")
    ap.add_argument("--random", type=int, default=3, help="random sub-networks besides the family")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--result", default="deliver_detect")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    space = get_search_space("yolo_det", **OPTIONS)
    loaders = shapes_loaders(space, images=args.images, seed=args.seed)
    supernet = space.build_supernet(num_classes=len(SHAPE_CLASSES))
    supernet.load_state_dict(torch.load(Path(args.load) / "supernet.pt"))
    supernet.eval()
    nets = {**family(space), **{f"random{i}": a for i, a in enumerate(
        space.distinct_samples(args.random, seed=args.seed + 11, extremes=False))}}
    alone_ref = {}
    if (RESULTS / "nas_detect.json").exists():
        ref = json.loads((RESULTS / "nas_detect.json").read_text())
        alone_ref = {k: v["map50_95"] for k, v in ref.get("family", {}).items()}
    rows: dict[str, dict] = {}
    for name, arch in nets.items():  # each network as the supernet holds it: BN recalibrated, not fine-tuned
        held = deliver_subnet(space=space, supernet=supernet, arch=arch, loaders=loaders, config=None, device=cpu)
        rows[name] = {"arch": arch, "trained_alone_30_epochs": alone_ref.get(name),
                      "supernet_test": float(space.evaluate(held.model, loaders.test, arch=arch, device=cpu))}
    recipes = args.recipes.split(",")
    for recipe in recipes:
        epochs, lr, mode = recipe.split(":")
        config = TrainConfig(epochs=int(epochs), lr=float(lr), optimizer=JOB["optimizer"].default, seed=args.seed)
        for name, arch in nets.items():
            torch.manual_seed(args.seed)
            t = time.perf_counter()
            got = deliver_subnet(space=space, supernet=supernet, arch=arch, loaders=loaders, config=config,
                                 device=cpu, distill=mode == "distill")
            test = float(space.evaluate(got.model, loaders.test, arch=arch, device=cpu))
            rows[name][recipe] = {"test": test, "val_before": got.val_before, "val": got.val,
                                  "kept_finetune": got.kept_finetune, "seconds": round(time.perf_counter() - t, 1)}
            print(f"{recipe} {name}: test mAP {test:.3f} (supernet {rows[name]['supernet_test']:.3f}, "
                  f"kept {got.kept_finetune})", flush=True)
    means = {r: float(np.mean([row[r]["test"] for row in rows.values()])) for r in recipes}
    means["supernet"] = float(np.mean([row["supernet_test"] for row in rows.values()]))
    wins = {r: sum(row[r]["test"] > row[recipes[0]]["test"] for row in rows.values()) for r in recipes[1:]}
    for r, m in means.items():
        print(f"{r}: mean test mAP50-95 {m:.3f}" + (f", beats {recipes[0]} on {wins[r]}/{len(rows)}" if r in wins
                                                    else ""))
    write_result(args.result, {"supernet": str(args.load), "recipes": recipes, "default_recipe": recipes[0],
                               "nets": rows, "mean_test_map": means, "wins_over_default": wins,
                               "trained_alone_reference": "bench/results/nas_detect.json family (30 epochs, "
                                                          "AdamW 4e-3)"})


if __name__ == "__main__":
    main()
