"""Weight-sharing layers: each holds the largest weights and runs a slice of them.

A sub-network uses the first `c` channels of every layer and the centre `k x k` of every kernel,
so all sub-networks share (and train) the same leading weights, as in Once-for-All. `extract_*`
copies the active slice into a plain torch layer, which computes exactly what the slice does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _centre(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    full = weight.shape[-1]
    if kernel > full or kernel % 2 == 0:
        raise ValueError(f"kernel {kernel} must be odd and at most {full}")
    start = (full - kernel) // 2
    return weight[..., start:start + kernel, start:start + kernel]


class DynamicConv2d(nn.Module):
    """Conv with elastic input/output channels and kernel size (centre crop). `depthwise=True`
    makes a depthwise conv whose channels follow its input."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int = 3, stride: int = 1,
                 depthwise: bool = False, bias: bool = False):
        super().__init__()
        self.max_in, self.max_out, self.max_kernel = max_in, max_out, max_kernel
        self.stride, self.depthwise = stride, depthwise
        in_per_group = 1 if depthwise else max_in
        self.weight = nn.Parameter(torch.empty(max_out, in_per_group, max_kernel, max_kernel))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.active_out = max_out
        self.active_kernel = max_kernel

    def active_weight(self, in_ch: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        out = in_ch if self.depthwise else self.active_out
        w = self.weight[:out] if self.depthwise else self.weight[:out, :in_ch]
        w = _centre(w, self.active_kernel)
        b = self.bias[:out] if self.bias is not None else None
        return w.contiguous(), b, (in_ch if self.depthwise else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b, groups = self.active_weight(x.shape[1])
        return F.conv2d(x, w, b, self.stride, self.active_kernel // 2, 1, groups)

    def extract(self, in_ch: int) -> nn.Conv2d:
        w, b, groups = self.active_weight(in_ch)
        conv = nn.Conv2d(in_ch, w.shape[0], self.active_kernel, self.stride, self.active_kernel // 2,
                         groups=groups, bias=b is not None)
        conv.weight.data.copy_(w.detach())
        if b is not None:
            conv.bias.data.copy_(b.detach())
        return conv


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm over the first `c` channels; running statistics are shared slices, and
    `recalibrate` (see autonn.train) re-estimates them for one extracted sub-network."""

    def __init__(self, max_ch: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.bn = nn.BatchNorm2d(max_ch, momentum=momentum, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, bn = x.shape[1], self.bn
        if c == bn.num_features:
            return bn(x)
        training = self.training or not bn.track_running_stats
        if self.training and bn.track_running_stats:
            bn.num_batches_tracked += 1
        return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                            training, bn.momentum, bn.eps)

    def extract(self, ch: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(ch, momentum=self.bn.momentum, eps=self.bn.eps)
        for name in ("weight", "bias"):
            getattr(bn, name).data.copy_(getattr(self.bn, name).data[:ch])
        for name in ("running_mean", "running_var"):
            getattr(bn, name).data.copy_(getattr(self.bn, name).data[:ch])
        bn.num_batches_tracked.data.copy_(self.bn.num_batches_tracked.data)
        return bn


class DynamicLinear(nn.Module):
    def __init__(self, max_in: int, out: int):
        super().__init__()
        self.linear = nn.Linear(max_in, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.linear.weight[:, : x.shape[1]], self.linear.bias)

    def extract(self, in_features: int) -> nn.Linear:
        lin = nn.Linear(in_features, self.linear.out_features)
        lin.weight.data.copy_(self.linear.weight.data[:, :in_features])
        lin.bias.data.copy_(self.linear.bias.data)
        return lin


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channel counts to hardware-friendly multiples (never below one divisor)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)
