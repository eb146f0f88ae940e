"""The sub-network Tango hands a user: weights from the supernet, BN recalibrated for that arch,
fine-tuned, and the fine-tune kept only if it helped on validation.

One function for the finetune job and the benchmarks, so a benchmark measures what a user gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autonn.evaluation import extract_copy, recalibrate_bn
from autonn.spaces.base import Arch, SearchSpace
from autonn.train import Checkpointer, ProgressFn, TrainConfig, finetune

CPU = torch.device("cpu")


@dataclass
class Delivered:
    model: nn.Module  # on the CPU, in eval mode
    val_before: float  # the supernet's own sub-network, after BN recalibration
    val: float  # of the model returned: the fine-tuned one only if it was not worse
    kept_finetune: bool
    history: list[dict] = field(default_factory=list)


def deliver_subnet(*, space: SearchSpace, supernet: nn.Module, arch: Arch, loaders: Any,
                   config: TrainConfig | None, device: torch.device, distill: bool = True,
                   checkpointer: Checkpointer | None = None, progress: ProgressFn | None = None,
                   meta: dict | None = None) -> Delivered:
    """`loaders` has `train`, `calib` and `val`; `config` None (or 0 epochs) skips fine-tuning.
    BN statistics and the before/after comparison run on the CPU, so they do not depend on
    which accelerator trained the model."""
    model = extract_copy(supernet, arch)
    recalibrate_bn(model=model, loader=loaders.calib, space=space, arch=arch, device=CPU)
    before = float(space.evaluate(model.eval(), loaders.val, arch=arch, device=CPU))
    if config is None or config.epochs <= 0:
        return Delivered(model=model.cpu().eval(), val_before=before, val=before, kept_finetune=False)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    after, history = finetune(space=space, model=model.train(), arch=arch, train_loader=loaders.train,
                              val_loader=loaders.val, config=config, device=device,
                              teacher=supernet if distill else None, checkpointer=checkpointer,
                              progress=progress, meta=meta)
    model = model.cpu().eval()
    if after >= before:
        return Delivered(model=model, val_before=before, val=float(after), kept_finetune=True, history=history)
    # Fine-tuning made it worse on validation: hand back the sub-network as the supernet trained it.
    model.load_state_dict(initial)
    return Delivered(model=model, val_before=before, val=before, kept_finetune=False, history=history)
