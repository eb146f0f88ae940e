"""Subnet evaluation: extract a copy, re-estimate its BN statistics, compute the task metric.

Shared supernet BN statistics are a mix over every subnet trained, so they fit none of them;
OFA re-estimates them per subnet on a few training batches before measuring it.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable

import torch
from torch import nn

from autonn.batching import Limited, resize, to_device, unwrap
from autonn.spaces.base import Arch, SearchSpace


def recalibrate_bn(*, model: nn.Module, loader: Iterable, space: SearchSpace, arch: Arch,
                   device: torch.device, batches: int = 10) -> nn.Module:
    """Re-estimate BN running statistics of `model` for `arch` as a cumulative average.

    Shared supernet statistics fit no single subnet, so OFA re-estimates them per subnet. The
    momentum is set to 1/(k+1) at batch k, which is exactly what momentum=None does, but also
    works for DynamicBatchNorm2d's sliced path (it forwards bn.momentum to F.batch_norm)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
    size, seen = space.input_size(arch), 0
    model.train()
    try:
        with torch.no_grad():
            for k, batch in enumerate(Limited(loader, batches)):
                for m in bns:
                    m.momentum = 1.0 / (k + 1)
                model(resize(to_device(batch[0], device), size))
                seen += 1
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
        model.eval()
    if bns and seen == 0:
        raise ValueError("the calibration loader yielded no batches")
    return model


def _storages(module: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in itertools.chain(module.parameters(), module.buffers())}


def extract_copy(supernet: nn.Module, arch: Arch) -> nn.Module:
    """A standalone subnet that shares no memory with the supernet, whose active arch is kept."""
    net = unwrap(supernet)
    previous = getattr(net, "active", None)
    try:
        with torch.no_grad():
            model = net.extract(arch)
    finally:
        if previous is not None:
            net.set_active(previous)
    if _storages(model) & _storages(net):  # a space whose extract returns views: copy to be safe
        model = copy.deepcopy(model)
    return model


def evaluate_subnet(*, space: SearchSpace, supernet: nn.Module, arch: Arch, calib_loader: Iterable,
                    val_loader: Iterable, device: torch.device, calib_batches: int = 10,
                    val_batches: int | None = None) -> float:
    """The task metric of `arch` after BN recalibration, leaving the supernet untouched."""
    model = extract_copy(supernet, arch).to(device)
    recalibrate_bn(model=model, loader=calib_loader, space=space, arch=arch, device=device, batches=calib_batches)
    return float(space.evaluate(model, Limited(val_loader, val_batches), arch=arch, device=device))
