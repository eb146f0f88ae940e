"""The demo project end to end over several data seeds, for two supernet recipes side by side.

    python bench/demo_seeds.py --seeds 0,1,2,3 --n-random 2,3 [--example examples/digits.yaml]

Each run is `tango run` on the example with its data seed (which images land in train, val and
test) and the supernet's `n_random` set, on its own embedded stack and home, one after another
(seed by seed, the recipes alternating). A single demo run's test accuracy says little about a
recipe: the test split is ~150 images and the pick depends on a 40-pair predictor; this shows how
far it moves between seeds and whether one recipe is better on the same data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml
from common import ROOT, write_result

from tango.settings import Settings


def stack_is_up() -> bool:
    try:
        return httpx.get(f"{Settings().project_manager_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_once(example: dict, *, seed: int, n_random: int, workdir: Path) -> dict:
    spec = {**example, "data": {**example["data"], "seed": seed},
            "training": {**example["training"], "n_random": n_random}}
    project, report = workdir / f"s{seed}_n{n_random}.yaml", workdir / f"s{seed}_n{n_random}.json"
    project.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "TANGO_HOME": str(workdir / f"home_s{seed}_n{n_random}")}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tango", "run", str(project), "--report-json", str(report)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    seconds = round(time.perf_counter() - t, 1)
    if proc.returncode != 0 or not report.exists():
        raise SystemExit(f"seed {seed}, n_random {n_random}: tango run exited {proc.returncode}\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
    run = json.loads(report.read_text())["run"]
    out, stages = run["result"]["report"], {s["name"]: s["result"] or {} for s in run["stages"]}
    row = {"seed": seed, "n_random": n_random, "seconds": seconds, "test": out["metric"].get("test"),
           "val": out["metric"]["val"], "predicted_ms": out["latency"].get("predicted_ms"),
           "measured_ms": out["latency"].get("measured_ms"), "meets_budget": out["meets_budget"],
           "supernet_val_largest": stages["supernet"].get("val_largest"),
           "supernet_val_smallest": stages["supernet"].get("val_smallest"),
           "predictor_kendall_tau": (stages["supernet"].get("predictor") or {}).get("kendall_tau"),
           "predicted_metric": stages["search"].get("predicted_metric"), "arch": out["arch"]}
    print(f"seed {seed}, n_random {n_random}: test {row['test']:.3f}, val {row['val']:.3f}, "
          f"{row['measured_ms']:.3f} ms measured; supernet val largest {row['supernet_val_largest']:.3f}, smallest "
          f"{row['supernet_val_smallest']:.3f}; {seconds} s", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--example", type=Path, default=ROOT / "examples" / "digits.yaml")
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--n-random", default="2,3", help="supernet recipes compared, side by side")
    ap.add_argument("--result", default="demo_seeds")
    args = ap.parse_args()
    if stack_is_up():
        raise SystemExit("a Tango stack is already running: `tango run` would use it; stop it first")
    example = yaml.safe_load(args.example.read_text())
    seeds, recipes = [int(s) for s in args.seeds.split(",")], [int(n) for n in args.n_random.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tango-demo-seeds-") as tmp:
        for seed in seeds:
            for n in recipes:
                rows.append(run_once(example, seed=seed, n_random=n, workdir=Path(tmp)))
    result: dict = {"example": str(args.example.relative_to(ROOT)), "budget_ms": example["budget_ms"],
                    "seeds": seeds, "runs": rows}
    for n in recipes:
        test = np.array([r["test"] for r in rows if r["n_random"] == n])
        result[f"n{n}"] = {"test_mean": float(test.mean()), "test_min": float(test.min()),
                           "test_max": float(test.max()), "test_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
                           "budget_met": sum(r["meets_budget"] for r in rows if r["n_random"] == n)}
        print(f"n_random {n}: test top-1 mean {test.mean():.3f} (min {test.min():.3f}, max {test.max():.3f}) over "
              f"{len(test)} seeds")
    if len(recipes) == 2:
        a, b = recipes
        diff = [next(r["test"] for r in rows if r["seed"] == s and r["n_random"] == b)
                - next(r["test"] for r in rows if r["seed"] == s and r["n_random"] == a) for s in seeds]
        result[f"paired_test_diff_n{b}_minus_n{a}"] = diff
        print(f"n_random {b} minus {a}, per seed: {', '.join(f'{d:+.3f}' for d in diff)}")
    write_result(args.result, result)


if __name__ == "__main__":
    main()
