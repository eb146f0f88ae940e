"""Per target, for a ResNet-style and a YOLO-style model: parity with PyTorch, median latency of the
generated package (run in its own fresh venv) and the speed-up over torch eager in the same run.

    python bench/codegen.py [--rounds 20] [--warmup 3] [--models resnet18,yolov8n,tango-digits,tango-shapes]
                            [--tune-trials 0]

Random weights (latency and parity do not depend on training). Builds the models, writes them to a
throwaway store the way autonn does, runs deploy_codegen's `generate` job (every target, verified),
times torch eager in a process of its own, prints a table and writes bench/results/codegen.json. Venvs and the
wheelhouse are cached under ~/.tango/cache/deploy_codegen, so reruns are quick. TensorRT cannot run
here: its rows say verified "static".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_result

GOALS = {"parity_fp32": 1e-4, "onnxruntime_speedup_vs_eager": 2.0, "tvm_tuned_vs_onnxruntime": 1.5}


OWN = {  # name: (search space, its options as in the example, classes, task)
    "tango-digits": ("resnet_cls", {"resolutions": [24, 28, 32], "base_widths": [16, 32, 64, 128], "stem_width": 16,
                                    "stem_stride": 1}, 10, "classify"),
    "tango-shapes": ("yolo_det", {"resolutions": [64, 96], "backbone_widths": [16, 32, 48, 64],
                                  "neck_widths": [48, 32, 48, 64]}, 3, "detect"),
}


def build(name: str, size: int | None):
    import torch
    import torchvision

    from tests.factories import tiny_detector

    torch.manual_seed(0)
    if name == "resnet18":
        return torchvision.models.resnet18(weights=None, num_classes=10).eval(), "classify", size or 224
    if name == "yolov8n":
        # YOLOv8n's own scale (depth 0.33, width 0.25) from the yaml dict.
        # Ultralytics' own initialisation (spread_scores=False): parity figures like a real model's,
        # though untrained scores stay under the threshold, so box agreement is vacuous here.
        return tiny_detector(3, width=0.25, depth=0.33, spread_scores=False), "detect", size or 320
    if name in OWN:
        # What Tango itself exports: the largest sub-network of the example's search space
        # (examples/digits.yaml, examples/shapes.yaml), extracted from a fresh supernet.
        from autonn.spaces import get_search_space

        space_name, options, classes, task = OWN[name]
        space = get_search_space(space_name, **options)
        arch = space.largest()
        model = space.build_supernet(num_classes=classes).extract(arch).eval()
        return model, task, size or space.input_size(arch)
    raise SystemExit(f"unknown model {name!r}: one of resnet18, yolov8n, {', '.join(OWN)}")


def eager_ms(model, size: int, *, warmup: int, rounds: int) -> float:
    import torch

    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32))
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def eager_in_subprocess(name: str, size: int | None, *, warmup: int, rounds: int, threads: int) -> float:
    """Torch eager in a process of its own, as the packages run: in this one TVM is loaded, and its
    OpenMP runtime beside torch's slowed eager several-fold when measured in-process."""
    cmd = [sys.executable, __file__, "--eager-only", name, "--warmup", str(warmup), "--rounds", str(rounds),
           "--threads", str(threads)]
    if size:
        cmd += ["--size", str(size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18,yolov8n,tango-digits,tango-shapes")
    ap.add_argument("--size", type=int, default=None, help="input size (default 224 resnet18, 320 yolov8n)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for eager and every package (1: steadier on a shared machine)")
    ap.add_argument("--tune-trials", type=int, default=0, help="also tune TVM (slow: minutes per 100 trials)")
    ap.add_argument("--tune-models", default=None, help="models to tune (default: every one of --models)")
    ap.add_argument("--tune-per-iter", type=int, default=None,
                    help="MetaSchedule candidates per round of one kernel (small: the slowest kernels get more)")
    ap.add_argument("--tune-per-task", type=int, default=None,
                    help="MetaSchedule trials per kernel (spreads --tune-trials over every kernel)")
    ap.add_argument("--tuning-dir", default=None,
                    help="keep TVM tuning databases here: a model with one already here is not tuned again "
                         "(tune under load once, then measure on a quiet machine)")
    ap.add_argument("--result", default="codegen", help="bench/results/<name>.json")
    ap.add_argument("--cache", default=str(Path.home() / ".tango" / "cache" / "deploy_codegen"))
    ap.add_argument("--eager-only", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.eager_only:
        import torch

        torch.set_num_threads(args.threads)
        model, _, size = build(args.eager_only, args.size)
        print(eager_ms(model, size, warmup=args.warmup, rounds=args.rounds))
        return

    from deploy_codegen.generate import cache_dir
    from deploy_codegen.records import Packages
    from deploy_codegen.runtime import build_runtime
    from tango.queue import execute
    from tango.settings import Settings
    from tests.factories import put_model_bundle

    results: dict = {"models": {}, "eager_ms": {}, "goals": GOALS, "rounds": args.rounds, "warmup": args.warmup,
                     "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="tango-bench-codegen-") as home:
        settings = Settings(home=Path(home))
        runtime = build_runtime(settings)
        runtime.migrate()
        cache_dir(settings).parent.mkdir(parents=True, exist_ok=True)
        Path(args.cache).mkdir(parents=True, exist_ok=True)
        cache_dir(settings).symlink_to(Path(args.cache), target_is_directory=True)
        kept = Path(args.tuning_dir) if args.tuning_dir else None
        if kept is not None:  # databases tuned by an earlier run, into this run's store
            for f in sorted(kept.rglob("*")):
                if f.is_file():
                    runtime.store.put_file(f.relative_to(kept).as_posix(), f)
        for name in args.models.split(","):
            model, task, size = build(name, args.size)
            classes = [f"class{i}" for i in range(10 if task == "classify" else 3)]
            put_model_bundle(runtime.store, name, model, task=task, classes=classes, input_size=size, arch=name)
            # Before and after the packages ran: the machine is shared, the quieter figure counts.
            before = eager_in_subprocess(name, args.size, warmup=args.warmup, rounds=args.rounds,
                                         threads=args.threads)
            timing = {"rounds": args.rounds, "warmup": args.warmup, "threads": args.threads}
            tvm_opts = {"num_cores": args.threads}
            targets: list[tuple[dict, str]] = [({"model_id": name, **timing, "options": {"tvm": tvm_opts}}, "")]
            stored = [k for k in runtime.store.list(f"tuning/{name}") if k.endswith("/meta.json")]
            if stored:
                print(f"{name}: using the tuning database kept in {kept}", flush=True)
                results.setdefault("tuning", {})[name] = {**runtime.store.get_json(stored[-1]), "reused": True}
            elif args.tune_trials and (args.tune_models is None or name in args.tune_models.split(",")):
                tune = runtime.jobs.create(kind="tune", params={"model_id": name, "trials": args.tune_trials,
                                                                "max_trials_per_task": args.tune_per_task,
                                                                "trials_per_iter": args.tune_per_iter,
                                                                "num_cores": args.threads})
                print(f"{name}: tuning TVM ({args.tune_trials} trials) ...", flush=True)
                execute(runtime, tune.id)
                tuned = runtime.jobs.get(tune.id)
                results.setdefault("tuning", {})[name] = tuned.result or {"error": tuned.error}
                for key in runtime.store.list(f"tuning/{name}") if kept is not None else []:
                    (kept / key).parent.mkdir(parents=True, exist_ok=True)
                    (kept / key).write_bytes(runtime.store.get_bytes(key))
            if name in results.get("tuning", {}):  # tuned here or kept from an earlier run
                targets.append(({"model_id": name, "targets": ["tvm"], **timing,
                                 "options": {"tvm": {**tvm_opts, "tune": True}}}, "tuned"))
            for params, _ in targets:
                job = runtime.jobs.create(kind="generate", params=params)
                print(f"{name}: generate {params.get('targets', 'all targets')} ...", flush=True)
                execute(runtime, job.id)
                done = runtime.jobs.get(job.id)
                if done.state.value != "succeeded":
                    raise SystemExit(f"{name}: generate failed: {done.error}")
            after = eager_in_subprocess(name, args.size, warmup=args.warmup, rounds=args.rounds,
                                         threads=args.threads)
            eager = min(before, after)
            results["eager_ms"][name] = {"median_ms": eager, "before": before, "after": after}
            rows = {}
            for row in Packages.of(runtime).for_model(name):
                report = row["report"] or {}
                parity = report.get("parity") or {}
                diffs = [o["max_abs_diff"] for o in (parity.get("outputs") or {}).values() if "max_abs_diff" in o]
                median = (report.get("latency") or {}).get("median_ms")
                entry = {"max_abs_diff": max(diffs) if diffs else None, "median_ms": median,
                         "speedup_vs_eager": eager / median if median else None,
                         "verified": report.get("verified") if report.get("verified") in ("run", "static") else "failed"}
                if "detection" in parity:
                    entry["detection_agreement"] = parity["detection"]["agreement"]
                    entry["detection_vacuous"] = parity["detection"]["vacuous"]
                if report.get("verified") == "static":
                    entry["status"] = report.get("status")
                rows[row["name"]] = entry
            results["models"][name] = rows
            print(f"\n{name} ({task}, {size}x{size}), torch eager {eager:.2f} ms")
            print(f"{'package':<14} {'verified':<8} {'max abs diff':>12} {'median ms':>10} {'vs eager':>9}")
            for pkg, e in rows.items():
                diff = "—" if e["max_abs_diff"] is None else f"{e['max_abs_diff']:.2e}"
                med = "—" if e["median_ms"] is None else f"{e['median_ms']:.2f}"
                sp = "—" if e["speedup_vs_eager"] is None else f"{e['speedup_vs_eager']:.2f}x"
                print(f"{pkg:<14} {e['verified']:<8} {diff:>12} {med:>10} {sp:>9}")
    results["note"] = ("CPU shared with other work while measured: provisional. Packages run in their own venvs "
                       f"with {args.threads} thread(s) of the machine's {os.cpu_count()} cores; eager is torch in a "
                       "process of its own, same threads, "
                       "timed before and after the packages (the lower median is used).")
    write_result(args.result, results)


if __name__ == "__main__":
    main()
