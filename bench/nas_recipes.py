"""Supernet recipe variants against the standalone references of a bench/nas.py run.

    python bench/nas_recipes.py --n-random 3 [--smallest-size random] [--reference nas_amd] [--result nas_recipe_n3]

Trains the classification supernet exactly as bench/nas.py does (same data, seed, epochs and
recipe) but for the variant asked for, then evaluates in it the architectures the reference run
compared with training alone (BN recalibration, test accuracy) and sets each against the
reference's mean standalone accuracy: within 2 points on how many of them. With the reference's
own settings (`--n-random 2`) it must reproduce the reference's supernet column, which checks that
the comparison is like for like. The standalone side is not retrained, so a variant costs one
supernet training (6-8 minutes on 1 core here) instead of a whole bench/nas.py run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from common import RESULTS, write_result
from nas import LR, OPTIONS, RECIPE, digits_loaders

from autonn.spaces import get_search_space
from autonn.train import TrainConfig, evaluate_subnet, train_supernet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-random", type=int, required=True, help="random sub-networks per sandwich step")
    ap.add_argument("--smallest-size", choices=["min", "random"], default=RECIPE.get("smallest_size", "min"),
                    help="the sandwich's smallest sub-network: at the lowest input size, or at one drawn each step")
    ap.add_argument("--reference", default="nas_amd", help="bench/results/<name>.json of a bench/nas.py run")
    ap.add_argument("--result", default=None, help="bench/results/<name>.json (default nas_recipe_n<N>)")
    args = ap.parse_args()
    ref = json.loads((RESULTS / f"{args.reference}.json").read_text())
    rows = ref["subnets_vs_alone"]
    test_images = int(ref["dataset"].split(" test")[0].rsplit("/ ", 1)[1])
    images, epochs, seed = 3000, ref["epochs"], 0  # bench/nas.py's defaults, which the reference ran with
    torch.set_num_threads(1)
    torch.manual_seed(seed)  # as bench/nas.py: the supernet's initial weights
    space = get_search_space("resnet_cls", **OPTIONS)
    loaders = digits_loaders(space, 64, seed, dataset="cluttered", images=images, test_images=test_images)
    cpu = torch.device("cpu")
    supernet = space.build_supernet(num_classes=10)
    config = TrainConfig(epochs=epochs, lr=LR, optimizer="adamw", warmup_epochs=0.5, n_random=args.n_random,
                         smallest_size=args.smallest_size, label_weight=RECIPE["label_weight"], seed=seed)
    t = time.perf_counter()
    trained = train_supernet(space=space, supernet=supernet, train_loader=loaders.train, val_loader=loaders.val,
                             config=config, device=cpu)
    seconds = round(time.perf_counter() - t, 1)
    out = []
    for row in rows:
        acc = evaluate_subnet(space=space, supernet=supernet, arch=row["arch"], calib_loader=loaders.calib,
                              val_loader=loaders.test, device=cpu)
        out.append({"arch": row["arch"], "supernet": acc, "reference_supernet": row["supernet"], "alone": row["alone"]})
        print(f"{space.input_size(row['arch'])} px, depths {row['arch']['depths']}: {acc:.3f} (reference supernet "
              f"{row['supernet']:.3f}, alone {row['alone']:.3f})", flush=True)
    diffs = np.array([r["supernet"] - r["alone"] for r in out])
    result = {"reference": args.reference, "reference_commit": ref.get("commit"), "n_random": args.n_random,
              "smallest_size": args.smallest_size, "epochs": epochs, "supernet_train_seconds": seconds,
              "reference_supernet_train_seconds": ref.get("supernet_train_seconds"), "val_largest": trained.final["val_largest"],
              "val_smallest": trained.final["val_smallest"], "subnets_within_2pts": int(np.sum(np.abs(diffs) <= 0.02)),
              "subnets_compared": len(out), "subnets_supernet_minus_alone_mean": float(diffs.mean()),
              "subnets_supernet_mean": float(np.mean([r["supernet"] for r in out])),
              "reference_subnets_within_2pts": ref.get("subnets_within_2pts"), "subnets_vs_alone": out}
    print(f"n_random {args.n_random}, smallest {args.smallest_size}: {result['subnets_within_2pts']}/{len(out)} "
          f"within 2 points of the reference's standalone means (mean difference {diffs.mean():+.3f}); supernet {seconds} s")
    suffix = "" if args.smallest_size == "min" else f"_{args.smallest_size}"
    write_result(args.result or f"nas_recipe_n{args.n_random}{suffix}", result)


if __name__ == "__main__":
    main()
