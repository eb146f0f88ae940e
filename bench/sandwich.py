"""Sandwich-rule variants for the detection supernet, side by side, on this CPU.

    python bench/sandwich.py [--variants min:1,random:1,random:2] [--epochs 30] [--jobs 3] [--save DIR]

Each variant (`smallest_size:n_random`) trains the YOLO-style supernet of bench/nas_detect.py with
its recipe, seed and data (generated shapes, offline), in its own process; the variants run at the
same time, so their training seconds are comparable with each other only. Each trained supernet
is then read the way the product reads it: sub-networks extracted with recalibrated BatchNorm,
mAP50-95 on the test split, for a fixed probe set the same in every variant (the n/s/m family and
random sub-networks, each at every input size). `smallest_size` "min" trains the smallest
sub-network at the lowest input size every step (BigNAS), "random" at a size drawn each step.
The figures per variant: the probes' mean test mAP, overall and per input size, and the share
of probes scoring higher at the largest size than at the smallest (trained alone, the larger size
is the better one on this set: nas_detect's family). With `--save DIR`, each supernet is kept in
DIR/<variant>/supernet.pt for `bench/nas_detect.py --load`. Writes bench/results/sandwich.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from common import write_result
from nas_detect import OPTIONS, family, recipe, shapes_loaders

from autonn.spaces import get_search_space
from autonn.train import evaluate_subnet, train_supernet
from tango.sampledata import SHAPE_CLASSES


def probes(space, *, n_random: int, seed: int) -> list[dict]:  # noqa: ANN001
    """The family and `n_random` random sub-networks, each at every input size."""
    base = [*family(space).values(), space.smallest(),
            *space.distinct_samples(n_random, seed=seed + 7, extremes=False)]
    out, seen = [], set()
    for arch in base:
        for size in space.input_sizes():
            pinned = space.pin_input_size(arch, size)
            if space.arch_key(pinned) not in seen:
                seen.add(space.arch_key(pinned))
                out.append(pinned)
    return out


def run_variant(args: argparse.Namespace) -> dict:
    smallest_size, n_random = args.one.split(":")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cpu = torch.device("cpu")
    space = get_search_space("yolo_det", **OPTIONS)
    loaders = shapes_loaders(space, images=args.images, seed=args.seed)
    config = recipe(epochs=args.epochs, seed=args.seed, n_random=int(n_random), smallest_size=smallest_size)
    supernet = space.build_supernet(num_classes=len(SHAPE_CLASSES))
    t = time.perf_counter()
    trained = train_supernet(space=space, supernet=supernet, train_loader=loaders.train, val_loader=loaders.val,
                             config=config, device=cpu)
    seconds = round(time.perf_counter() - t, 1)
    if args.save:
        out = Path(args.save) / args.one.replace(":", "_")
        out.mkdir(parents=True, exist_ok=True)
        torch.save(supernet.state_dict(), out / "supernet.pt")
        (out / "config.json").write_text(json.dumps(asdict(config)))  # what nas_detect --load records
    rows = [{"arch": a, "test_map50_95": evaluate_subnet(space=space, supernet=supernet, arch=a,
                                                         calib_loader=loaders.calib, val_loader=loaders.test,
                                                         device=cpu)}
            for a in probes(space, n_random=args.probes, seed=args.seed)]
    return {"variant": args.one, "smallest_size": smallest_size, "n_random": int(n_random),
            "train_seconds": seconds, "val_largest": trained.final["val_largest"],
            "val_smallest": trained.final["val_smallest"], "probes": rows}


def summary(space, variant: dict) -> dict:  # noqa: ANN001
    rows, sizes = variant["probes"], space.input_sizes()
    by_size = {s: [r["test_map50_95"] for r in rows if space.input_size(r["arch"]) == s] for s in sizes}
    key = {space.arch_key(r["arch"]): r["test_map50_95"] for r in rows}
    higher = [key[space.arch_key(space.pin_input_size(r["arch"], sizes[-1]))] > r["test_map50_95"]
              for r in rows if space.input_size(r["arch"]) == sizes[0]]
    fam = {f"{name}_{s}": key[space.arch_key(space.pin_input_size(a, s))]
           for name, a in family(space).items() for s in sizes}
    return {"mean_test_map": float(np.mean([r["test_map50_95"] for r in rows])),
            "mean_test_map_by_size": {str(s): float(np.mean(v)) for s, v in by_size.items()},
            "share_larger_size_better": float(np.mean(higher)), "family_test_map": fam}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="min:1,random:1,random:2", help="smallest_size:n_random, comma-separated")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--probes", type=int, default=16, help="random sub-networks probed (each at every input size)")
    ap.add_argument("--jobs", type=int, default=3, help="variants trained at the same time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="keep each supernet in DIR/<smallest_size>_<n_random>/supernet.pt")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: train one variant, print its JSON
    ap.add_argument("--result", default="sandwich")
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_variant(args)), flush=True)
        return
    variants = args.variants.split(",")
    passed = [f"--{k}={v}" for k, v in (("epochs", args.epochs), ("images", args.images), ("probes", args.probes),
                                          ("seed", args.seed), ("save", args.save)) if v is not None]

    def train(v: str) -> dict:
        print(f"training variant {v}", flush=True)
        done = subprocess.run([sys.executable, __file__, f"--one={v}", *passed], capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode or not lines:
            raise SystemExit(f"variant {v} failed (rc {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        return json.loads(lines[-1][len("RESULT "):])

    with ThreadPoolExecutor(args.jobs) as pool:  # each variant is its own process; the threads only wait
        results = dict(zip(variants, pool.map(train, variants), strict=True))
    space = get_search_space("yolo_det", **OPTIONS)
    for v in variants:
        results[v].update(summary(space, results[v]))
        r = results[v]
        print(f"{v}: mean test mAP {r['mean_test_map']:.3f} by size {r['mean_test_map_by_size']}, "
              f"larger size better in {r['share_larger_size_better']:.0%}, family {r['family_test_map']}, "
              f"trained in {r['train_seconds']} s", flush=True)
    write_result(args.result, {"space_options": OPTIONS, "epochs": args.epochs, "images": args.images,
                               "jobs": args.jobs, "variants": results})


if __name__ == "__main__":
    main()
