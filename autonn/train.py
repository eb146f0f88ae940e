"""Supernet training (sandwich rule + in-place distillation) and fine-tuning, generic over the
search space: only the space's hooks (loss, distill_loss, evaluate, input_size) know the task.
BN recalibration and subnet evaluation live in autonn.evaluation and are re-exported here.

Every epoch ends with a self-describing checkpoint (`torch.save` bytes) handed to a
`Checkpointer`; a run that finds one resumes after its epoch and, on CPU with fixed seeds, ends
with the same weights and history as an uninterrupted run. That needs the data order to be a
function of (seed, epoch): `SeededShuffle` or DistributedSampler (a plain `shuffle=True` loader
also works, since the global torch RNG is part of the checkpoint).
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from autonn.batching import Limited, SeededShuffle, detach, epoch_permutation, resize, to_device, unwrap
from autonn.evaluation import evaluate_subnet, extract_copy, recalibrate_bn
from autonn.spaces.base import Arch, SearchSpace, Supernet

__all__ = ["CHECKPOINT_FORMAT", "Checkpointer", "Limited", "ProgressFn", "SeededShuffle", "TrainConfig",
           "TrainResult", "detach", "epoch_permutation", "evaluate_subnet", "extract_copy", "finetune",
           "load_checkpoint", "recalibrate_bn", "resize", "run_job", "supernet_job", "to_device", "train_supernet",
           "unwrap"]

CHECKPOINT_FORMAT = "tango.autonn.checkpoint/1"
ProgressFn = Callable[[float, str, dict], None]


class Checkpointer(Protocol):
    def save(self, epoch: int, payload: bytes) -> None: ...

    def load_latest(self) -> tuple[int, bytes] | None: ...


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 0.05
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) | "adamw"
    momentum: float = 0.9
    weight_decay: float = 3e-5  # not applied to BN/bias (1-d) parameters
    warmup_epochs: float = 0.0  # linear warm-up, then cosine decay to min_lr_ratio * lr, per step
    min_lr_ratio: float = 0.0
    batch_size: int = 64  # informational (the caller builds loaders); used by the DDP path
    n_random: int = 2  # random subnets per step besides the largest and the smallest
    # The smallest sub-network's input size each step: "min" (BigNAS: the smallest at the lowest
    # resolution) or "random" (drawn from the space's sizes each step, as OFA draws one per batch),
    # so narrow networks at the larger sizes are trained every other step, not only by random draws.
    smallest_size: str = "min"
    distill: bool = True
    label_weight: float = 0.0  # task-loss weight on distilled subnets; 0 = pure in-place distillation
    amp: bool = True  # only on CUDA: bf16 autocast where supported, else fp16 + GradScaler
    grad_clip: float | None = None
    seed: int = 0
    calib_batches: int = 10  # BN recalibration batches per validated subnet
    val_batches: int | None = None  # cap on validation batches (None = whole loader)
    progress_every: int = 20  # steps between progress reports (each one is a chance to cancel)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0  # epochs executed by this call (0 when the checkpoint was already final)
    resumed_from_epoch: int | None = None
    final: dict[str, float] = field(default_factory=dict)


def autocast_setup(config: TrainConfig, device: torch.device) -> tuple[Callable, torch.amp.GradScaler]:
    use = config.amp and device.type == "cuda"
    bf16 = use and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use and not bf16)  # bf16 needs no loss scaling
    return (lambda: torch.autocast(device_type=device.type, dtype=dtype, enabled=use)), scaler


# --- the training loop shared by supernet training, fine-tuning and each DDP rank ------------
def _optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"optimizer={config.optimizer!r} is not one of 'sgd', 'adamw'")


def _lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total, warm = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1.0, total - warm)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return factor


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def load_checkpoint(payload: bytes) -> dict:
    """A checkpoint's dict. weights_only: checkpoints come from storage, never run their code."""
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not a Tango autonn checkpoint")
    return state


@dataclass
class _Job:
    """What differs between supernet training, fine-tuning and DDP ranks."""

    kind: str  # "supernet" | "finetune"
    space: SearchSpace
    module: nn.Module  # the network whose weights are trained and checkpointed
    loader: Any
    config: TrainConfig
    device: torch.device
    step: Callable[..., dict[str, torch.Tensor]]  # (images, targets, rng, autocast, scaler) -> losses; runs backward
    validate: Callable[[], dict[str, float]]
    checkpointer: Checkpointer | None = None
    progress: ProgressFn | None = None
    meta: dict | None = None
    extra: dict = field(default_factory=dict)  # more self-description for the checkpoint
    is_main: bool = True  # only the main DDP rank validates, checkpoints and reports
    share: Callable[[Any], Any] = lambda payload: payload  # DDP: broadcast rank 0's resume payload


def run_job(job: _Job) -> TrainResult:
    cfg, module = job.config, job.module
    steps = len(job.loader)
    if steps == 0:
        raise ValueError("the training loader yields no batches")
    optimizer = _optimizer(module, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg, steps))
    autocast, scaler = autocast_setup(cfg, job.device)
    result, step, start = TrainResult(), 0, 1

    found = job.checkpointer.load_latest() if job.checkpointer is not None and job.is_main else None
    found = job.share(found)
    if found is not None:
        state = load_checkpoint(found[1])
        here = _describe(job.space)
        if state["kind"] != job.kind or state["space"] != here:
            raise ValueError(f"checkpoint is a {state['kind']} of {state['space']}, not a {job.kind} of {here}")
        clash = [k for k, v in job.extra.items() if state.get(k) != v]
        if clash:
            raise ValueError(f"checkpoint differs from this run in {', '.join(clash)}")
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        result.history, step, start = list(state["history"]), state["step"], state["epoch"] + 1
        result.resumed_from_epoch = state["epoch"]
    else:
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)

    for epoch in range(start, cfg.epochs + 1):
        sampler = getattr(job.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        arch_rng = random.Random(cfg.seed * 1_000_003 + epoch)  # subnet draws: a function of (seed, epoch)
        module.train()
        sums: dict[str, torch.Tensor] = {}
        for i, (images, targets) in enumerate(job.loader):
            optimizer.zero_grad(set_to_none=True)
            losses = job.step(to_device(images, job.device), to_device(targets, job.device), arch_rng, autocast, scaler)
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            if job.is_main and job.progress and (i + 1) % cfg.progress_every == 0 and i + 1 < steps:
                now = {k: float(v) / (i + 1) for k, v in sums.items()}
                _check_finite(now, epoch, i)
                job.progress(((epoch - 1) + (i + 1) / steps) / cfg.epochs,
                             f"epoch {epoch}/{cfg.epochs} step {i + 1}/{steps}", {"epoch": epoch, "step": step, **now})
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **{k: float(v) / steps for k, v in sums.items()}}
        _check_finite(record, epoch, steps - 1)
        result.epochs_run += 1
        if not job.is_main:
            continue
        record.update(job.validate())
        result.history.append(record)
        if job.checkpointer is not None:
            payload = {"format": CHECKPOINT_FORMAT, "kind": job.kind, "epoch": epoch, "step": step,
                       "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                       "metric": record.get("metric"), "history": result.history,
                       "space": _describe(job.space),
                       "config": asdict(cfg), "meta": job.meta or {}, "rng": _rng_state(), **job.extra}
            buf = io.BytesIO()
            torch.save(payload, buf)
            job.checkpointer.save(epoch, buf.getvalue())
        if job.progress:
            job.progress(epoch / cfg.epochs, f"epoch {epoch}/{cfg.epochs} done", dict(record))
    result.final = {k: v for k, v in (result.history[-1] if result.history else {}).items()
                    if k.startswith("val_") or k == "metric"}
    return result


def _describe(space: SearchSpace) -> dict:
    return {"name": space.name, "options": dict(getattr(space, "options", {}) or {})}


def _check_finite(metrics: dict, epoch: int, i: int) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"{', '.join(bad)} diverged at epoch {epoch} step {i + 1}; lower the learning rate")


# --- supernet training ------------------------------------------------------------------------
def sandwich_step(*, space: SearchSpace, net: nn.Module, forward: nn.Module, config: TrainConfig) -> Callable:
    """One batch of the sandwich rule: the largest learns from labels, the smallest and
    `n_random` random subnets learn from the largest's outputs of the same batch. Gradients of
    all of them add up before the single optimizer step."""
    largest, smallest = space.largest(), space.smallest()
    if config.smallest_size not in ("min", "random"):
        raise ValueError(f"smallest_size must be 'min' or 'random', not {config.smallest_size!r}")
    sizes = space.input_sizes() if config.smallest_size == "random" else []

    def step(images, targets, rng, autocast, scaler) -> dict[str, torch.Tensor]:
        net.set_active(largest)
        with autocast():
            out = forward(resize(images, space.input_size(largest)))
            loss = space.loss(out, targets)
        scaler.scale(loss).backward()
        teacher, total_student = detach(out), torch.zeros((), device=loss.device)
        del out
        low = space.pin_input_size(smallest, rng.choice(sizes)) if len(sizes) > 1 else smallest
        for arch in [low] + [space.sample(rng) for _ in range(config.n_random)]:
            net.set_active(arch)
            with autocast():
                out = forward(resize(images, space.input_size(arch)))
                if config.distill:
                    s_loss = space.distill_loss(out, teacher)
                    if config.label_weight:
                        s_loss = s_loss + config.label_weight * space.loss(out, targets)
                else:
                    s_loss = space.loss(out, targets)
            scaler.scale(s_loss).backward()
            total_student = total_student + s_loss.detach()
        net.set_active(largest)
        return {"loss": loss.detach(), "student_loss": total_student / (1 + config.n_random)}
    return step


def train_supernet(*, space: SearchSpace, supernet: Supernet, train_loader: Any, val_loader: Iterable,
                   config: TrainConfig, device: torch.device, checkpointer: Checkpointer | None = None,
                   progress: ProgressFn | None = None, meta: dict | None = None) -> TrainResult:
    """Train the weight-sharing supernet in place (moved to `device`); see `run_job` for resume."""
    supernet.to(device)
    return run_job(supernet_job(space=space, supernet=supernet, forward=supernet, train_loader=train_loader,
                                val_loader=val_loader, config=config, device=device, checkpointer=checkpointer,
                                progress=progress, meta=meta))


def supernet_job(*, space, supernet, forward, train_loader, val_loader, config, device, checkpointer=None,
                 progress=None, meta=None, is_main=True, share=None) -> _Job:
    def validate() -> dict[str, float]:
        kw = dict(space=space, supernet=supernet, calib_loader=train_loader, val_loader=val_loader, device=device,
                  calib_batches=config.calib_batches, val_batches=config.val_batches)
        big = evaluate_subnet(arch=space.largest(), **kw)
        return {"val_largest": big, "val_smallest": evaluate_subnet(arch=space.smallest(), **kw), "metric": big}

    job = _Job("supernet", space, supernet, train_loader, config, device,
               sandwich_step(space=space, net=supernet, forward=forward, config=config), validate,
               checkpointer, progress, meta, is_main=is_main)
    if share is not None:
        job.share = share
    return job


# --- fine-tuning an extracted subnet -----------------------------------------------------------
def standalone_teacher(*, space: SearchSpace, teacher: nn.Module, loader: Iterable, device: torch.device,
                       batches: int = 10) -> nn.Module:
    """What a fine-tune distils from: a Supernet's largest arch as a copy with its own BN statistics
    (any other module as it is). The supernet's shared statistics fit no sub-network: on the digits
    demo its largest arch scored 46-57 % val top-1 with them and 97-98 % recalibrated, and
    fine-tuning against that made students worse the longer it ran."""
    if not isinstance(unwrap(teacher), Supernet):
        return teacher
    largest = space.largest()
    copy_ = space.as_teacher(extract_copy(teacher, largest)).to(device)
    return recalibrate_bn(model=copy_, loader=loader, space=space, arch=largest, device=device, batches=batches)


def finetune(*, space: SearchSpace, model: nn.Module, arch: Arch, train_loader: Any, val_loader: Iterable,
             config: TrainConfig, device: torch.device, teacher: nn.Module | None = None,
             checkpointer: Checkpointer | None = None, progress: ProgressFn | None = None,
             meta: dict | None = None) -> tuple[float, list[dict]]:
    """Fine-tune a standalone subnet on the task loss, plus distillation from `teacher` when given
    (a Supernet teacher is its largest arch, recalibrated (`standalone_teacher`), at its own input
    size; any other module runs at the student's). The task loss is always kept: a fine-tuned
    model must fit the labels."""
    model.to(device)
    size = space.input_size(arch)
    t_size = space.input_size(space.largest()) if isinstance(unwrap(teacher), Supernet) else size
    if teacher is not None:
        teacher = standalone_teacher(space=space, teacher=teacher, loader=train_loader, device=device,
                                     batches=config.calib_batches).to(device).eval()

    def step(images, targets, rng, autocast, scaler) -> dict[str, torch.Tensor]:
        with autocast():
            out = model(resize(images, size))
            loss = space.loss(out, targets)
            losses = {"loss": loss.detach()}
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(resize(images, t_size))
                d_loss = space.distill_loss(out, detach(t_out))
                losses["distill_loss"], loss = d_loss.detach(), loss + d_loss
        scaler.scale(loss).backward()
        return losses

    def validate() -> dict[str, float]:
        model.eval()
        metric = float(space.evaluate(model, Limited(val_loader, config.val_batches), arch=arch, device=device))
        return {"val": metric, "metric": metric}

    job = _Job("finetune", space, model, train_loader, config, device, step, validate, checkpointer, progress,
               meta, extra={"arch": space.validate(arch)})
    result = run_job(job)
    return result.final.get("metric", float("nan")), result.history
