"""AutoNN on an NVIDIA GPU: training throughput, GPU latency tables, budgeted search on the GPU.

    python bench/nas_gpu.py [--train-seconds 75] [--images 1500] [--budgets 10] [--out DIR]

Made for a short lease of a GPU machine, so each phase writes the results file as it ends (a
later phase that fails or runs out of time leaves the earlier figures), most telling first:

1. latency: the per-block table of each search space (`yolo_det`, `resnet_cls`, their default
   options) timed with the product's `torch-cuda` runtime (eager fp16, batch 1, CUDA events,
   interleaved rounds, noise-aware), then checked on 30 held-out sub-networks: MAPE, share within
   ±10 %, Kendall tau, noise floor;
2. throughput: sandwich-rule supernet training steps of the detector (largest + smallest + one
   random sub-network per batch, in-place distillation) in images/s, with bf16 autocast, in fp32,
   and on the machine's own CPU cores, one after the other in this run (ratios, not absolutes);
3. training: the detector supernet trained on the generated shapes set for as many epochs as fit
   in `--train-seconds` at the measured bf16 rate, with its validation mAP50-95 per epoch;
4. search: the accuracy predictor fitted on sub-networks of that supernet, then the product's
   budgeted search (`search_under_budget`, predictors then measured on this GPU) for `--budgets`
   budgets between the fastest and the largest sub-network's measured GPU latency: hit rate
   (measured <= 1.05 x budget) and seconds per budget.

Writes bench/results/nas_gpu.json (and a copy in `--out`, where the device tool collects files).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from common import measured_ms, write_result

from autonn.batching import SeededShuffle, to_device
from autonn.data import make_loaders
from autonn.latency import (
    build_latency_table,
    evaluate_latency_model,
    network_input_shape,
    time_torch_cuda,
)
from autonn.predictors import fit_accuracy_predictor, measure_archs
from autonn.search import BudgetUnreachable, search_under_budget
from autonn.spaces import get_search_space
from autonn.train import TrainConfig, autocast_setup, sandwich_step, train_supernet
from tango.sampledata import SHAPE_CLASSES, make_shapes

LR = 4e-3  # bench/nas_detect.py's recipe (AdamW), which learns on this set
# --smoke: tiny spaces, on the CPU with ONNX Runtime when there is no GPU; checks the script, not the GPU.
SMOKE = {"yolo_det": {"resolutions": [64], "backbone_widths": [16, 32, 48, 64], "neck_widths": [48, 32, 48, 64]},
         "resnet_cls": {"resolutions": [64]}}


def gpu_info() -> dict:
    info: dict = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                    bf16=torch.cuda.is_bf16_supported())
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        check=False, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def latency_phase(result: dict, *, device_name: str, n_eval: int, runtime: str, options: dict,
                  max_rounds: int) -> dict:
    tables = {}
    for name, nc in (("yolo_det", len(SHAPE_CLASSES)), ("resnet_cls", 10)):
        space = get_search_space(name, **options.get(name, {}))
        table = build_latency_table(space=space, num_classes=nc, device=device_name, runtime=runtime,
                                    n_fit_networks=30, seed=0, max_rounds=max_rounds)
        ev = evaluate_latency_model(table=table, space=space, num_classes=nc, n_networks=n_eval, seed=1)
        tables[name] = table
        result[f"{name}_latency"] = {
            "blocks": len(table.entries), "build_seconds": table.build_seconds, "table_noise_floor": table.noise_floor,
            "overhead_ms": table.overhead_ms, **{k: ev[k] for k in (
                "mape", "within_10pct", "kendall_tau", "noise_floor", "mape_uncorrected", "kendall_tau_uncorrected",
                "n_networks", "timing_rounds", "correction", "predicted_ms", "measured_ms")}}
        print(f"{name} GPU table: {len(table.entries)} blocks in {table.build_seconds:.0f} s; on {n_eval} held-out "
              f"networks MAPE {ev['mape']:.3f}, within 10 % {ev['within_10pct']:.2f}, tau {ev['kendall_tau']:.3f}, "
              f"noise {ev['noise_floor']:.3f}; measured {min(ev['measured_ms']):.2f}-{max(ev['measured_ms']):.2f} ms",
              flush=True)
    det = result["yolo_det_latency"]
    result.update(latency_mape=det["mape"], latency_within_10pct=det["within_10pct"],
                  latency_kendall_tau=det["kendall_tau"], latency_noise_floor=det["noise_floor"])
    return tables


def steps_per_second(*, space, supernet, loader, device: torch.device, amp: bool, steps: int, warmup: int) -> float:
    """Sandwich-rule optimizer steps per second (forward, backward, AdamW step), after warm-up."""
    supernet.to(device).train()
    config = TrainConfig(lr=LR, optimizer="adamw", n_random=1, amp=amp)
    step = sandwich_step(space=space, net=supernet, forward=supernet, config=config)
    autocast, scaler = autocast_setup(config, device)
    opt = torch.optim.AdamW(supernet.parameters(), lr=LR)
    rng = random.Random(0)
    batches = (batch for _ in range(warmup + steps) for batch in loader)  # re-iterated when steps outrun an epoch
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        images, targets = next(batches)
        opt.zero_grad(set_to_none=True)
        step(to_device(images, device), to_device(targets, device), rng, autocast, scaler)
        scaler.step(opt)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-seconds", type=float, default=75.0)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--predictor-archs", type=int, default=40)
    ap.add_argument("--budgets", type=int, default=10)
    ap.add_argument("--eval-networks", type=int, default=30)
    ap.add_argument("--max-rounds", type=int, default=10, help="cap on the tables' noise-aware timing rounds")
    ap.add_argument("--cpu-steps", type=int, default=3)
    ap.add_argument("--phases", default="latency,throughput,train,search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--result", default="nas_gpu")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="also copy the results file here")
    ap.add_argument("--smoke", action="store_true", help="tiny spaces; runs on the CPU where there is no GPU")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise SystemExit("bench/nas_gpu.py needs a CUDA GPU; bench/nas.py and bench/nas_detect.py time the CPU")
    phases = set(args.phases.split(","))
    gpu = torch.device("cuda" if cuda else "cpu")
    runtime = "torch-cuda" if cuda else "onnxruntime-cpu"
    options = SMOKE if args.smoke else {}
    info = gpu_info()
    device_name = info.get("gpu", "host").lower().replace("nvidia ", "").replace(" ", "-")
    result: dict = {"gpu_info": info, "device_name": device_name, "runtime": runtime, "smoke": args.smoke,
                    "phases_done": []}

    def save() -> None:
        path = write_result(args.result, result)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(args.out) / path.name)

    t_all = time.perf_counter()
    if "latency" in phases:
        tables = latency_phase(result, device_name=device_name, n_eval=args.eval_networks, runtime=runtime,
                               options=options, max_rounds=args.max_rounds)
        result["phases_done"].append("latency")
        save()

    space = get_search_space("yolo_det", **options.get("yolo_det", {}))  # the product's default detector space
    nc = len(SHAPE_CLASSES)
    size = max(space.resolutions)
    t = time.perf_counter()
    rows = make_shapes(args.images, size=size, seed=args.seed)
    n_test = n_val = int(0.1 * len(rows))
    samples = {"test": rows[:n_test], "val": rows[n_test:n_test + n_val], "train": rows[n_test + n_val:]}
    loaders = make_loaders(samples=samples, task="detect", classes=list(SHAPE_CLASSES), space=space,
                           batch_size=args.batch_size,
                           train_sampler=SeededShuffle(len(samples["train"]), seed=args.seed))
    result.update(space=space.name, space_options=dict(space.options), cardinality=space.cardinality(),
                  dataset=f"generated shapes, {args.images} images at {size} px", batch_size=args.batch_size,
                  dataset_seconds=round(time.perf_counter() - t, 1))
    steps_per_epoch = len(loaders.train)

    rate, amp_ok = None, True
    if "throughput" in phases:
        rates: dict[str, float | None] = {}
        for label, device, amp, steps in (("gpu_bf16", gpu, True, 30), ("gpu_fp32", gpu, False, 15),
                                          ("cpu", torch.device("cpu"), False, args.cpu_steps)):
            torch.manual_seed(args.seed)
            net = space.build_supernet(num_classes=nc)
            try:
                rates[label] = steps_per_second(space=space, supernet=net, loader=loaders.train, device=device,
                                                amp=amp, steps=steps, warmup=min(3, steps))
            except Exception as exc:  # noqa: BLE001 - one failed setting must not cost the lease's other figures
                rates[label] = None
                result[f"{label}_error"] = repr(exc)
                print(f"{label} failed: {exc!r}", flush=True)
                continue
            finally:
                del net
                if cuda:
                    torch.cuda.empty_cache()
            print(f"{label}: {rates[label] * args.batch_size:.1f} images/s ({rates[label]:.2f} sandwich steps/s, "
                  f"batch {args.batch_size}, up to {size} px)", flush=True)

        def ratio(a: str, b: str) -> float | None:
            return rates[a] / rates[b] if rates[a] and rates[b] else None

        amp_ok = rates["gpu_bf16"] is not None
        rate = rates["gpu_bf16"] or rates["gpu_fp32"]
        keys = {"gpu_bf16": "gpu_train_images_per_s", "gpu_fp32": "gpu_train_images_per_s_fp32",
                "cpu": "cpu_train_images_per_s"}
        result.update({keys[k]: v * args.batch_size if v else None for k, v in rates.items()})
        result.update(cpu_threads=torch.get_num_threads(), bf16_speedup_vs_fp32=ratio("gpu_bf16", "gpu_fp32"),
                      gpu_speedup_vs_cpu=ratio("gpu_bf16", "cpu"),
                      throughput_note="sandwich steps: largest + smallest + 1 random sub-network per batch, "
                                      "forward + backward + AdamW; images/s = steps/s x batch size")
        result["phases_done"].append("throughput")
        save()

    if not phases & {"train", "search"}:
        print(f"done in {time.perf_counter() - t_all:.0f} s")
        return
    epochs = args.max_epochs if rate is None else max(2, min(args.max_epochs, int(args.train_seconds * rate
                                                                                     / steps_per_epoch)))
    config = TrainConfig(epochs=epochs, lr=LR, optimizer="adamw", weight_decay=5e-4, grad_clip=10.0, n_random=1,
                         seed=args.seed, warmup_epochs=1.0, val_batches=4, amp=amp_ok)
    torch.manual_seed(args.seed)
    supernet = space.build_supernet(num_classes=nc)
    t = time.perf_counter()
    trained = train_supernet(space=space, supernet=supernet, train_loader=loaders.train, val_loader=loaders.val,
                             config=config, device=gpu,
                             progress=lambda frac, msg, m: msg.endswith("done") and print(
                                 f"{msg}: loss {m.get('loss', float('nan')):.3f}, val mAP50-95 largest "
                                 f"{m.get('val_largest', float('nan')):.3f} smallest "
                                 f"{m.get('val_smallest', float('nan')):.3f}", flush=True))
    result.update(supernet_epochs=epochs, supernet_train_seconds=round(time.perf_counter() - t, 1),
                  supernet_train_images_per_s_with_validation=epochs * steps_per_epoch * args.batch_size
                  / (time.perf_counter() - t),
                  supernet_val_largest=trained.final["val_largest"], supernet_val_smallest=trained.final["val_smallest"],
                  supernet_history=trained.history)
    result["phases_done"].append("train")
    save()

    if "search" not in phases or "latency" not in phases:
        print(f"done in {time.perf_counter() - t_all:.0f} s")
        return
    archs = space.distinct_samples(args.predictor_archs, seed=args.seed + 1)
    t = time.perf_counter()
    pairs = measure_archs(space=space, supernet=supernet, archs=archs, calib_loader=loaders.calib,
                          val_loader=loaders.val, device=gpu, val_batches=4)
    predictor = fit_accuracy_predictor(space=space, pairs=pairs, seed=args.seed)
    result.update(predictor_pair_seconds=(time.perf_counter() - t) / len(archs),
                  accuracy_predictor={k: predictor.report[k] for k in ("model", "rmse", "kendall_tau", "n_train",
                                                                       "n_test")})
    table = tables["yolo_det"]

    def measure(arch: dict) -> float:
        if not cuda:
            return measured_ms(space, supernet, [arch], 1)[0]
        return float(np.median(time_torch_cuda(supernet.extract(arch), network_input_shape(space, arch))))

    fastest, largest = measure(space.smallest()), measure(space.largest())
    budgets = list(np.linspace(fastest * 1.1, largest, args.budgets))
    hits, seconds, rows_out = 0, [], []
    for b in budgets:
        t = time.perf_counter()
        try:
            res = search_under_budget(space=space, accuracy=predictor.predict, latency=table, measure=measure,
                                      budget_ms=b, device_name=device_name, seed=args.seed)
        except BudgetUnreachable as exc:
            rows_out.append({"budget_ms": b, "refused": str(exc), "hit": False})
            continue
        seconds.append(time.perf_counter() - t)
        hit = res.measured_ms <= 1.05 * b
        hits += hit
        rows_out.append({"budget_ms": b, "predicted_ms": res.predicted_ms, "measured_ms": res.measured_ms,
                         "rounds": len(res.rounds), "predicted_map": res.predicted_metric, "hit": bool(hit)})
        print(f"budget {b:.2f} ms: measured {res.measured_ms:.2f} ms, predicted mAP {res.predicted_metric:.3f}, "
              f"{len(res.rounds)} round(s), {seconds[-1]:.1f} s", flush=True)
    result.update(gpu_fastest_ms=fastest, gpu_largest_ms=largest, budget_hit_rate=hits / len(budgets),
                  search_seconds_per_budget_with_measuring=float(np.median(seconds)) if seconds else None,
                  budgets=rows_out)
    result["phases_done"].append("search")
    result["total_seconds"] = round(time.perf_counter() - t_all, 1)
    save()
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float, str))}, indent=1))


if __name__ == "__main__":
    main()
