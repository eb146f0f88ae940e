"""Weight-sharing YOLOv8 layers for `autonn.spaces.yolo`, and the standalone blocks the latency
table times. Every dynamic layer copies its active slice into the matching real Ultralytics
module (`Conv`, `C2f`, `SPPF`, `Detect`), so an extracted sub-network is plain Ultralytics.

Channel slicing follows the real modules' layouts: a C2f concatenates its parts ([y0, y1, m1..mn]
and, in the neck, [upsampled, lateral]), so the next conv's input columns are gathered part by
part ("segments"), each part keeping its leading channels, not the first c of the concatenation.

The last section holds helpers for Detect's outputs that the space's loss, distillation and
metric share (raw vs decoded outputs, per-level resampling, DFL decoding, matching).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any

# Ultralytics reads these at import: never reach the network, never pip-install, keep settings in temp.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "tango-ultralytics"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from ultralytics.nn.modules import C2f, SPPF, Conv, Detect  # noqa: E402

from autonn.dynamic import DynamicBatchNorm2d, DynamicConv2d  # noqa: E402

REG_MAX = 16
STRIDES = (8, 16, 32)
# Ultralytics trains its BatchNorms with these (initialize_weights); extracted models keep them.
BN_EPS, BN_MOMENTUM = 1e-3, 0.03


def segment_index(max_sizes: tuple[int, ...], sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Input columns of the leading `sizes[j]` channels of each concatenated part j, when the
    supernet's weight holds each part at its maximum size `max_sizes[j]`."""
    starts = [sum(max_sizes[:j]) for j in range(len(max_sizes))]
    return torch.cat([torch.arange(s, s + n, device=device) for s, n in zip(starts, sizes, strict=True)])


def _detect_c3(p3: int, nc: int) -> int:
    return max(p3, min(nc, 100))  # Detect's classification-branch width (set by the first level)


class DynConv(nn.Module):
    """Ultralytics `Conv` (conv, BN, SiLU) with elastic channels."""

    def __init__(self, max_in: int, max_out: int, k: int = 1, s: int = 1, act: bool = True):
        super().__init__()
        self.conv = DynamicConv2d(max_in, max_out, k, s)
        self.bn = DynamicBatchNorm2d(max_out, momentum=BN_MOMENTUM, eps=BN_EPS)
        self.act = nn.SiLU() if act else nn.Identity()

    @property
    def active_out(self) -> int:
        return self.conv.active_out

    @active_out.setter
    def active_out(self, value: int) -> None:
        self.conv.active_out = value

    def weight(self, in_ch: int, in_index: torch.Tensor | None = None) -> torch.Tensor:
        w = self.conv.weight[: self.active_out]
        return w[:, :in_ch] if in_index is None else w.index_select(1, in_index)

    def forward(self, x: torch.Tensor, in_index: torch.Tensor | None = None) -> torch.Tensor:
        k, s = self.conv.max_kernel, self.conv.stride
        return self.act(self.bn(F.conv2d(x, self.weight(x.shape[1], in_index), None, s, k // 2)))

    def bn_state(self) -> dict[str, torch.Tensor]:
        c, bn = self.active_out, self.bn.bn
        return {"weight": bn.weight[:c], "bias": bn.bias[:c], "running_mean": bn.running_mean[:c],
                "running_var": bn.running_var[:c], "num_batches_tracked": bn.num_batches_tracked}

    def copy_to(self, dst: Conv, in_ch: int, in_index: torch.Tensor | None = None) -> None:
        _load_conv(dst, self.weight(in_ch, in_index), [self.bn_state()], self.bn.bn)


@torch.no_grad()
def _load_conv(dst: Conv, weight: torch.Tensor, bn_parts: list[dict[str, torch.Tensor]],
               like: nn.BatchNorm2d) -> None:
    if dst.conv.weight.shape != weight.shape:
        raise RuntimeError(f"extracted conv expects {tuple(dst.conv.weight.shape)}, slice is {tuple(weight.shape)}")
    dst.conv.weight.copy_(weight)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst.bn, name).copy_(torch.cat([p[name] for p in bn_parts]))
    dst.bn.num_batches_tracked.copy_(bn_parts[0]["num_batches_tracked"])
    dst.bn.eps, dst.bn.momentum = like.eps, like.momentum


class DynBottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1, self.cv2, self.add = DynConv(c, c, 3), DynConv(c, c, 3), shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class DynC2f(nn.Module):
    """C2f with elastic output width (hidden c = out / 2, as C2f's e=0.5) and depth (the first n
    bottlenecks run). `in_parts` are the maximum widths of the tensors it concatenates first.
    C2f's cv1 is held as two halves so each chunk slices its own leading channels."""

    def __init__(self, in_parts: tuple[int, ...], max_out: int, max_n: int, shortcut: bool):
        super().__init__()
        self.in_parts, self.cmax, self.max_n = tuple(in_parts), max_out // 2, max_n
        self.cv1a = DynConv(sum(in_parts), self.cmax, 1)
        self.cv1b = DynConv(sum(in_parts), self.cmax, 1)
        self.m = nn.ModuleList(DynBottleneck(self.cmax, shortcut) for _ in range(max_n))
        self.cv2 = DynConv((2 + max_n) * self.cmax, max_out, 1)
        self.n = max_n

    def configure(self, out: int, n: int) -> None:
        c = out // 2
        self.cv1a.active_out = self.cv1b.active_out = c
        for m in self.m:
            m.cv1.active_out = m.cv2.active_out = c
        self.cv2.active_out, self.n = out, n

    def _in_index(self, parts: list[torch.Tensor]) -> torch.Tensor | None:
        if len(parts) == 1:
            return None
        return segment_index(self.in_parts, tuple(p.shape[1] for p in parts), parts[0].device)

    def _out_index(self, device: torch.device) -> torch.Tensor:
        c = self.cv1a.active_out
        return segment_index((self.cmax,) * (2 + self.max_n), (c,) * (2 + self.n) + (0,) * (self.max_n - self.n),
                             device)

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        x, idx = torch.cat(parts, 1) if len(parts) > 1 else parts[0], self._in_index(list(parts))
        y = [self.cv1a(x, idx), self.cv1b(x, idx)]
        y.extend(m(y[-1]) for m in self.m[: self.n])
        return self.cv2(torch.cat(y, 1), self._out_index(x.device))

    @torch.no_grad()
    def copy_to(self, dst: C2f, in_sizes: tuple[int, ...]) -> None:
        in_ch = sum(in_sizes)
        idx = segment_index(self.in_parts, in_sizes, self.cv2.conv.weight.device) if len(in_sizes) > 1 else None
        w = torch.cat([self.cv1a.weight(in_ch, idx), self.cv1b.weight(in_ch, idx)])
        _load_conv(dst.cv1, w, [self.cv1a.bn_state(), self.cv1b.bn_state()], self.cv1a.bn.bn)
        for src, tgt in zip(self.m[: self.n], dst.m, strict=True):
            src.cv1.copy_to(tgt.cv1, src.cv1.active_out)
            src.cv2.copy_to(tgt.cv2, src.cv2.active_out)
        self.cv2.copy_to(dst.cv2, 0, self._out_index(self.cv2.conv.weight.device))


class DynSPPF(nn.Module):
    """SPPF with in = out channels elastic (hidden = in / 2, pooled three times, k=5). Its cv1 is
    activated, as Ultralytics builds SPPF for YOLOv8 configs (the unactivated cv1 is YOLO26's)."""

    def __init__(self, max_c: int):
        super().__init__()
        self.hmax = max_c // 2
        self.cv1 = DynConv(max_c, self.hmax, 1)
        self.cv2 = DynConv(4 * self.hmax, max_c, 1)
        self.m = nn.MaxPool2d(5, 1, 2)

    def configure(self, c: int) -> None:
        self.cv1.active_out, self.cv2.active_out = c // 2, c

    def _index(self, device: torch.device) -> torch.Tensor:
        return segment_index((self.hmax,) * 4, (self.cv1.active_out,) * 4, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1), self._index(x.device))

    def copy_to(self, dst: SPPF, in_ch: int) -> None:
        self.cv1.copy_to(dst.cv1, in_ch)
        self.cv2.copy_to(dst.cv2, 0, self._index(self.cv2.conv.weight.device))


def _branch(ci: int, mid: int, out: int) -> nn.Sequential:
    return nn.Sequential(DynConv(ci, mid, 3), DynConv(mid, mid, 3), DynamicConv2d(mid, out, 1, bias=True))


def dynamic_detect(nc: int, max_ch: tuple[int, ...], strides: tuple[int, ...]) -> Detect:
    """A real Ultralytics `Detect` (YOLOv8 head: 3x3, 3x3, 1x1 per branch, DFL with reg_max 16)
    whose box (cv2) and class (cv3) branches are elastic; Detect's own forward, decoding and
    anchors run unchanged. `configure_detect` sets the class-branch width from the P3 width."""
    head = Detect(nc=nc, reg_max=REG_MAX, ch=tuple(max_ch))
    c2 = max(16, max_ch[0] // 4, REG_MAX * 4)
    if c2 != REG_MAX * 4:
        raise ValueError("P3 wider than 256 channels changes Detect's box-branch width; not supported")
    c3 = _detect_c3(max_ch[0], nc)
    head.cv2 = nn.ModuleList(_branch(c, c2, 4 * REG_MAX) for c in max_ch)
    head.cv3 = nn.ModuleList(_branch(c, c3, nc) for c in max_ch)
    head.stride = torch.tensor(strides, dtype=torch.float32)
    return head


@torch.no_grad()
def ultralytics_init(net: nn.Module) -> None:
    """Initialise as an Ultralytics-built model: PyTorch's default conv init (DynamicConv2d's
    Kaiming fan-out init makes the 1x1 head outputs' logits far too large), Detect's prior
    biases (call after this)."""
    for m in net.modules():
        if isinstance(m, DynamicConv2d):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            if m.bias is not None:
                bound = 1 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound)


def configure_detect(head: Detect, p3: int) -> None:
    c3 = _detect_c3(p3, head.nc)
    for branch in head.cv3:
        branch[0].active_out = branch[1].active_out = c3


@torch.no_grad()
def copy_detect(src: Detect, dst: Detect, ch: tuple[int, ...]) -> None:
    for heads_src, heads_dst in ((src.cv2, dst.cv2), (src.cv3, dst.cv3)):
        for c, bs, bd in zip(ch, heads_src, heads_dst, strict=True):
            bs[0].copy_to(bd[0], c)
            bs[1].copy_to(bd[1], bs[0].active_out)
            bd[2].load_state_dict(bs[2].extract(bs[1].active_out).state_dict())
    dst.stride = src.stride.clone()


# --- standalone blocks for the latency table --------------------------------------------------
class C2fTail(nn.Module):
    """A real C2f after its cv1 (which the latency table times as a `conv` block): input is the
    cv1 output (2c = out channels), output the C2f's."""

    def __init__(self, out: int, n: int, shortcut: bool):
        super().__init__()
        self.c2f = C2f(out, out, n, shortcut)
        self.c2f.cv1 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2f(x)


class LevelHead(nn.Module):
    """One level of the YOLOv8 Detect head, decoding included: (1, ci, h, w) -> (1, 4 + nc, h*w).
    The class branch is as wide as the whole head's (set by the P3 width `p3`)."""

    def __init__(self, ci: int, p3: int, nc: int, stride: int = 8):
        super().__init__()
        self.detect = Detect(nc=nc, reg_max=REG_MAX, ch=(ci,))
        c2, c3 = REG_MAX * 4, _detect_c3(p3, nc)
        box = nn.Sequential(Conv(ci, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * REG_MAX, 1))
        self.detect.cv2 = nn.ModuleList([box])
        self.detect.cv3 = nn.ModuleList([nn.Sequential(Conv(ci, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1))])
        self.detect.stride = torch.tensor([float(stride)])
        self.detect.export, self.detect.format = True, "onnx"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detect([x])


def make_block(kind: str, f: dict[str, int], num_classes: int) -> nn.Module:
    if kind == "conv":
        return Conv(f["i"], f["o"], f["k"], f["s"])
    if kind == "c2fm":
        return C2fTail(f["o"], f["n"], bool(f["sc"]))
    if kind == "sppf":
        sppf = SPPF(f["c"], f["c"], 5)
        sppf.cv1.act = nn.SiLU()
        return sppf
    if kind == "up":
        return nn.Upsample(scale_factor=2, mode="nearest")
    if kind == "head":
        return LevelHead(f["i"], f["p"], num_classes)
    raise ValueError(f"unknown block kind {kind!r}")


# --- Detect outputs -------------------------------------------------------------------------
def raw_outputs(outputs: Any) -> dict[str, Any] | None:
    if isinstance(outputs, dict):
        return outputs.get("one2many", outputs)
    if isinstance(outputs, (tuple, list)) and len(outputs) == 2 and isinstance(outputs[1], dict):
        return raw_outputs(outputs[1])
    return None


def level_sizes(anchors: int) -> list[tuple[int, int]]:
    # A square input of side R has (R/8)^2 + (R/16)^2 + (R/32)^2 = 21 R^2 / 1024 anchors.
    side = round(math.sqrt(anchors * 1024 / 21))
    sizes = [(side // s, side // s) for s in STRIDES]
    if sum(h * w for h, w in sizes) != anchors:
        raise ValueError(f"{anchors} anchors do not come from a square input with strides {STRIDES}")
    return sizes


def resample_levels(x: torch.Tensor, src: Sequence[tuple[int, int]], dst: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(B, C, anchors) over levels of sizes `src` -> the same over `dst`, bilinearly per level."""
    if list(src) == list(dst):
        return x
    b, c, _ = x.shape
    parts = x.split([h * w for h, w in src], 2)
    return torch.cat([F.interpolate(p.reshape(b, c, *hw), size=to, mode="bilinear", align_corners=False).flatten(2)
                      for p, hw, to in zip(parts, src, dst, strict=True)], 2)


def dfl_bin_transfer(scale: float, like: torch.Tensor) -> torch.Tensor:
    """(REG_MAX, REG_MAX) matrix moving each DFL bin's mass to `scale` x its distance, split
    linearly between the two nearest bins (distances past the last bin stay in it)."""
    bins = torch.arange(REG_MAX, dtype=like.dtype, device=like.device)
    return (1 - ((bins * scale).clamp(max=REG_MAX - 1)[:, None] - bins[None]).abs()).clamp(min=0)


def decode_boxes(boxes: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Raw DFL box logits (B, 64, A) -> xywh pixels (B, 4, A), as Detect decodes them."""
    from ultralytics.utils.tal import dist2bbox, make_anchors

    anchors, strides = make_anchors(list(feats), torch.tensor(STRIDES, dtype=boxes.dtype), 0.5)
    b, _, a = boxes.shape
    proj = torch.arange(REG_MAX, dtype=boxes.dtype, device=boxes.device)
    dist = (boxes.view(b, 4, REG_MAX, a).softmax(2) * proj.view(1, 1, -1, 1)).sum(2)
    return dist2bbox(dist, anchors.T.unsqueeze(0), xywh=True, dim=1) * strides.T


def match_predictions(pred_cls: torch.Tensor, gt_cls: torch.Tensor, iou: torch.Tensor,
                      thresholds: np.ndarray) -> np.ndarray:
    """(detections, thresholds) booleans: detections, most confident first, each claim the free
    same-class target they overlap most, counted correct at every threshold that overlap meets."""
    iou = (iou * (gt_cls[:, None] == pred_cls[None, :])).numpy()
    correct = np.zeros((iou.shape[1], len(thresholds)), dtype=bool)
    taken = np.zeros((iou.shape[0], len(thresholds)), dtype=bool)
    for j in range(iou.shape[1]):
        free = np.where(taken, 0.0, iou[:, j, None])
        best = free.argmax(0)
        hit = free[best, np.arange(len(thresholds))] >= thresholds
        correct[j] = hit
        taken[best[hit], np.arange(len(thresholds))[hit]] = True
    return correct
