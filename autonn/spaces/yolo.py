"""YOLOv8-style detector search space ("yolo_det"), built on Ultralytics modules.

Structure (yolov8.yaml): Conv(s2) stem; four stages of Conv(s2) + C2f (P2..P5); SPPF; an
FPN/PAN neck of four C2f blocks (top-down P4, P3; bottom-up P4, P5); the YOLOv8 `Detect` head on
P3, P4, P5 (strides 8, 16, 32; DFL with reg_max 16).

Genes: `resolution` (multiples of 32); `widths`, eight multipliers in block order
[P2, P3, P4, P5, top-down P4, P3 out, P4 out, P5 out] of `backbone_widths` (0.25-1.0) and
`neck_widths` (0.5-1.0); `depths`, eight C2f bottleneck counts (1-3) in the same order. The stem
is half the P2 width, SPPF keeps the P5 width, the PAN down-convs keep their input width.

Outputs, as Ultralytics' `Detect`: in train mode the raw dict {"boxes": (B, 64, A), "scores":
(B, nc, A), "feats": [P3, P4, P5]}; the supernet in eval mode returns (decoded, raw); an
extracted model (an Ultralytics `DetectionModel`, head in export mode) returns only the decoded
(B, 4 + nc, A) tensor [xywh pixels, class probabilities], which is what ONNX export writes.

Ultralytics is AGPL-3.0 and used here as a library only.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "tango-ultralytics"))

import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
from collections.abc import Iterable, Iterator, Sequence  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from autonn.dynamic import make_divisible  # noqa: E402
from autonn.spaces.base import Arch, BlockSpec, SearchSpace, Supernet, register_search_space  # noqa: E402
from autonn.spaces.yolo_blocks import (REG_MAX, STRIDES, DynC2f, DynConv, DynSPPF, configure_detect,  # noqa: E402
                                       copy_detect, decode_boxes, dfl_bin_transfer, dynamic_detect, level_sizes,
                                       make_block, match_predictions, raw_outputs, resample_levels,
                                       ultralytics_init)

DEPTHS = (1, 2, 3)
BACKBONE_MULTS = (0.25, 0.5, 0.75, 1.0)
NECK_MULTS = (0.5, 0.75, 1.0)
RESOLUTIONS = (160, 192, 224, 256, 288, 320)
BACKBONE_WIDTHS = (32, 64, 96, 128)  # P2..P5 at multiplier 1.0
NECK_WIDTHS = (96, 64, 96, 128)  # top-down P4, P3 out, P4 out, P5 out
BLOCKS = ("b2", "b3", "b4", "b5", "t4", "t3", "n4", "n5")
LOSS_GAINS = {"box": 7.5, "cls": 0.5, "dfl": 1.5}  # Ultralytics' defaults

try:  # Ultralytics settings sync would phone home from training callbacks
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("sync"):
        SETTINGS.update({"sync": False})
except Exception:  # noqa: BLE001  (a read-only config dir must not break the import)
    pass


def _stem(p2: int) -> int:
    return make_divisible(p2 / 2)


class YoloSupernet(Supernet):
    def __init__(self, space: YoloSearchSpace, num_classes: int):
        super().__init__()
        b, (t4, t3, n4, n5), d = space.backbone_widths, space.neck_widths, max(DEPTHS)
        self.space, self.num_classes = space, num_classes
        stem = _stem(b[0])
        self.stem = DynConv(3, stem, 3, 2)
        self.down = nn.ModuleList(DynConv(ci, co, 3, 2) for ci, co in zip((stem, *b[:-1]), b))
        self.stages = nn.ModuleList(DynC2f((c,), c, d, shortcut=True) for c in b)
        self.sppf = DynSPPF(b[3])
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = DynC2f((b[3], b[2]), t4, d, shortcut=False)
        self.td3 = DynC2f((t4, b[1]), t3, d, shortcut=False)
        self.pd3 = DynConv(t3, t3, 3, 2)
        self.bu4 = DynC2f((t3, t4), n4, d, shortcut=False)
        self.pd4 = DynConv(n4, n4, 3, 2)
        self.bu5 = DynC2f((n4, b[3]), n5, d, shortcut=False)
        self.head = dynamic_detect(num_classes, (t3, n4, n5), STRIDES)
        ultralytics_init(self)
        self.head.bias_init()
        self.set_active(space.largest())

    def set_active(self, arch: Arch) -> None:
        arch = self.space.validate(arch)
        ch, d = self.space.channels(arch), arch["depths"]
        self.stem.active_out = ch["stem"]
        for s, name in enumerate(BLOCKS[:4]):
            self.down[s].active_out = ch[name]
            self.stages[s].configure(ch[name], d[s])
        self.sppf.configure(ch["b5"])
        for i, (block, name) in enumerate(zip((self.td4, self.td3, self.bu4, self.bu5), BLOCKS[4:]), 4):
            block.configure(ch[name], d[i])
        self.pd3.active_out, self.pd4.active_out = ch["t3"], ch["n4"]
        configure_detect(self.head, ch["t3"])
        self.active, self.channels = arch, ch

    def forward(self, x: torch.Tensor) -> Any:
        x = self.stem(x)
        feats = []
        for down, stage in zip(self.down, self.stages):
            x = stage(down(x))
            feats.append(x)
        p3, p4, p5 = feats[1], feats[2], self.sppf(x)
        t4 = self.td4(self.up(p5), p4)
        t3 = self.td3(self.up(t4), p3)
        n4 = self.bu4(self.pd3(t3), t4)
        n5 = self.bu5(self.pd4(n4), p5)
        return self.head([t3, n4, n5])

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001
        # Detect keeps stride and its anchor cache as plain attributes: move them, rebuild anchors.
        super()._apply(fn, *args, **kwargs)
        self.head.stride, self.head.shape = fn(self.head.stride), None
        return self

    def yaml(self, num_classes: int | None = None) -> dict:
        """The Ultralytics model config (yolov8.yaml layout, exact channels) of the active arch."""
        c, d = self.channels, self.active["depths"]

        def up() -> list:
            return [-1, 1, "nn.Upsample", [None, 2, "nearest"]]

        backbone = [[-1, 1, "Conv", [c["stem"], 3, 2]]]
        for i, name in enumerate(BLOCKS[:4]):
            backbone += [[-1, 1, "Conv", [c[name], 3, 2]], [-1, d[i], "C2f", [c[name], True]]]
        backbone.append([-1, 1, "SPPF", [c["b5"], 5]])
        head = [up(), [[-1, 6], 1, "Concat", [1]], [-1, d[4], "C2f", [c["t4"]]],
                up(), [[-1, 4], 1, "Concat", [1]], [-1, d[5], "C2f", [c["t3"]]],
                [-1, 1, "Conv", [c["t3"], 3, 2]], [[-1, 12], 1, "Concat", [1]], [-1, d[6], "C2f", [c["n4"]]],
                [-1, 1, "Conv", [c["n4"], 3, 2]], [[-1, 9], 1, "Concat", [1]], [-1, d[7], "C2f", [c["n5"]]],
                [[15, 18, 21], 1, "Detect", ["nc"]]]
        return {"nc": num_classes or self.num_classes, "backbone": backbone, "head": head}

    @torch.no_grad()
    def extract(self, arch: Arch) -> nn.Module:
        """An Ultralytics `DetectionModel` of `arch` with the active weights copied (nothing
        fused). Its head is in export mode: eval returns the decoded (B, 4 + nc, A) tensor; set
        `model.model[-1].export = False` for Ultralytics' (decoded, raw) pair."""
        from ultralytics.nn.tasks import DetectionModel

        self.set_active(arch)
        c = self.channels
        model = DetectionModel(self.yaml(), ch=3, nc=self.num_classes, verbose=False)
        m = model.model
        self.stem.copy_to(m[0], 3)
        prev = c["stem"]
        for s, name in enumerate(BLOCKS[:4]):
            self.down[s].copy_to(m[1 + 2 * s], prev)
            self.stages[s].copy_to(m[2 + 2 * s], (c[name],))
            prev = c[name]
        self.sppf.copy_to(m[9], c["b5"])
        self.td4.copy_to(m[12], (c["b5"], c["b4"]))
        self.td3.copy_to(m[15], (c["t4"], c["b3"]))
        self.pd3.copy_to(m[16], c["t3"])
        self.bu4.copy_to(m[18], (c["t3"], c["t4"]))
        self.pd4.copy_to(m[19], c["n4"])
        self.bu5.copy_to(m[21], (c["n4"], c["b5"]))
        copy_detect(self.head, m[22], (c["t3"], c["n4"], c["n5"]))
        m[22].export, m[22].format = True, "onnx"
        model.args = SimpleNamespace(**LOSS_GAINS)
        model = model.to(self.head.stride.device).eval()
        # Detect caches anchors per input shape; caching them for (1, 3, size, size) now makes
        # torch.jit.trace's re-run check see the same graph (set head.dynamic for other sizes).
        size = self.space.input_size(arch)
        model(torch.zeros(1, 3, size, size, device=self.head.stride.device))
        return model


# --- block keys -------------------------------------------------------------------------------
def _conv(ci: int, co: int, k: int, s: int, r: int) -> BlockSpec:
    return BlockSpec(f"conv:i{ci}:o{co}:k{k}:s{s}:r{r}", (1, ci, r, r))


def _c2f(ci: int, co: int, n: int, shortcut: bool, r: int) -> list[BlockSpec]:
    # A C2f is timed as its cv1 (a conv over the possibly concatenated input) plus the rest,
    # so neck keys do not multiply input widths by output widths by depths.
    return [_conv(ci, co, 1, 1, r), BlockSpec(f"c2fm:o{co}:n{n}:sc{int(shortcut)}:r{r}", (1, co, r, r))]


def _simple(kind: str, c: int, r: int) -> BlockSpec:
    return BlockSpec(f"{kind}:c{c}:r{r}", (1, c, r, r))


def _head(ci: int, p3: int, r: int) -> BlockSpec:
    return BlockSpec(f"head:i{ci}:p{p3}:r{r}", (1, ci, r, r))


@register_search_space("yolo_det")
class YoloSearchSpace(SearchSpace):
    task = "detect"

    def __init__(self, *, resolutions: Iterable[int] = RESOLUTIONS, backbone_widths: Iterable[int] = BACKBONE_WIDTHS,
                 neck_widths: Iterable[int] = NECK_WIDTHS):
        self.resolutions = tuple(sorted(int(r) for r in resolutions))
        self.backbone_widths = tuple(int(w) for w in backbone_widths)
        self.neck_widths = tuple(int(w) for w in neck_widths)
        if not self.resolutions or any(r % 32 or r < 64 for r in self.resolutions):
            raise ValueError("resolutions must be multiples of 32, at least 64")
        if len(self.backbone_widths) != 4 or len(self.neck_widths) != 4:
            raise ValueError("backbone_widths and neck_widths need four widths each")
        self._criteria: dict[tuple, Any] = {}

    @property
    def options(self) -> dict[str, Any]:
        return {"resolutions": list(self.resolutions), "backbone_widths": list(self.backbone_widths),
                "neck_widths": list(self.neck_widths)}

    # --- configs -------------------------------------------------------------------------
    @staticmethod
    def _mults(i: int) -> tuple[float, ...]:
        return BACKBONE_MULTS if i < 4 else NECK_MULTS

    def sample(self, rng: random.Random) -> Arch:
        return {"resolution": rng.choice(self.resolutions),
                "widths": [rng.choice(self._mults(i)) for i in range(len(BLOCKS))],
                "depths": [rng.choice(DEPTHS) for _ in BLOCKS]}

    def _extreme(self, pick) -> Arch:  # noqa: ANN001
        return {"resolution": pick(self.resolutions), "widths": [pick(self._mults(i)) for i in range(len(BLOCKS))],
                "depths": [pick(DEPTHS)] * len(BLOCKS)}

    def largest(self) -> Arch:
        return self._extreme(max)

    def smallest(self) -> Arch:
        return self._extreme(min)

    def mutate(self, arch: Arch, rng: random.Random, prob: float = 0.1) -> Arch:
        child = self.validate(arch)
        if rng.random() < prob:
            child["resolution"] = rng.choice(self.resolutions)
        for i in range(len(BLOCKS)):
            if rng.random() < prob:
                child["widths"][i] = rng.choice(self._mults(i))
            if rng.random() < prob:
                child["depths"][i] = rng.choice(DEPTHS)
        return child

    def validate(self, arch: Arch) -> Arch:
        if not isinstance(arch, dict):
            raise ValueError("an arch config is a JSON object")
        unknown = set(arch) - {"resolution", "widths", "depths"}
        if unknown:
            raise ValueError(f"unknown genes: {', '.join(sorted(unknown))}")
        res = arch.get("resolution")
        if isinstance(res, bool) or res not in self.resolutions:
            raise ValueError(f"resolution={res!r} is not one of {', '.join(map(str, self.resolutions))}")
        clean: Arch = {"resolution": int(res)}
        for gene, choices_of, cast in (("widths", self._mults, float), ("depths", lambda i: DEPTHS, int)):
            values = arch.get(gene)
            if not isinstance(values, list) or len(values) != len(BLOCKS):
                raise ValueError(f"{gene} must be a list of {len(BLOCKS)} values ({', '.join(BLOCKS)})")
            for i, v in enumerate(values):
                choices = choices_of(i)
                if isinstance(v, bool) or v not in choices:
                    raise ValueError(f"{gene}[{i}]={v!r} is not one of {', '.join(map(str, choices))}")
            clean[gene] = [cast(v) for v in values]
        return clean

    def cardinality(self) -> int:
        widths = math.prod(len(self._mults(i)) for i in range(len(BLOCKS)))
        return len(self.resolutions) * widths * len(DEPTHS) ** len(BLOCKS)

    def encode(self, arch: Arch) -> list[float]:
        """Resolution, eight width multipliers, then per C2f whether its 2nd and 3rd bottlenecks
        run; all in [0, 1]."""
        arch = self.validate(arch)
        r0, r1 = self.resolutions[0], self.resolutions[-1]
        vec = [(arch["resolution"] - r0) / max(1, r1 - r0)]
        for i, w in enumerate(arch["widths"]):
            lo, hi = self._mults(i)[0], self._mults(i)[-1]
            vec.append((w - lo) / (hi - lo))
        for d in arch["depths"]:
            vec += [float(d >= 2), float(d >= 3)]
        return vec

    def input_size(self, arch: Arch) -> int:
        return int(arch["resolution"])

    def channels(self, arch: Arch) -> dict[str, int]:
        bases = self.backbone_widths + self.neck_widths
        ch = {name: make_divisible(base * w) for name, base, w in zip(BLOCKS, bases, arch["widths"], strict=True)}
        return {"stem": _stem(ch["b2"]), **ch}

    def _width_sets(self) -> dict[str, list[int]]:
        bases = self.backbone_widths + self.neck_widths
        return {name: sorted({make_divisible(b * m) for m in self._mults(i)}) for i, (name, b) in
                enumerate(zip(BLOCKS, bases))}

    # --- networks ------------------------------------------------------------------------
    def build_supernet(self, *, num_classes: int) -> YoloSupernet:
        return YoloSupernet(self, num_classes)

    def blocks(self, arch: Arch) -> list[BlockSpec]:
        """Execution order. Not timed: Concat (a copy), C2f's chunk (a view) and the head's final
        concatenation of levels; the latency table's correction absorbs them."""
        arch = self.validate(arch)
        r, c, d = arch["resolution"], self.channels(arch), arch["depths"]
        specs, prev = [_conv(3, c["stem"], 3, 2, r)], c["stem"]
        for s, name in enumerate(BLOCKS[:4]):
            h = r >> (s + 1)
            specs += [_conv(prev, c[name], 3, 2, h), *_c2f(c[name], c[name], d[s], True, h // 2)]
            prev = c[name]
        r8, r16, r32 = r // 8, r // 16, r // 32
        specs += [_simple("sppf", c["b5"], r32), _simple("up", c["b5"], r32),
                  *_c2f(c["b5"] + c["b4"], c["t4"], d[4], False, r16), _simple("up", c["t4"], r16),
                  *_c2f(c["t4"] + c["b3"], c["t3"], d[5], False, r8), _conv(c["t3"], c["t3"], 3, 2, r8),
                  *_c2f(c["t3"] + c["t4"], c["n4"], d[6], False, r16), _conv(c["n4"], c["n4"], 3, 2, r16),
                  *_c2f(c["n4"] + c["b5"], c["n5"], d[7], False, r32),
                  _head(c["t3"], c["t3"], r8), _head(c["n4"], c["t3"], r16), _head(c["n5"], c["t3"], r32)]
        return specs

    def all_blocks(self) -> Iterator[BlockSpec]:
        """Each block's key depends on a few genes only, so the union is enumerated block by
        block over those genes' choices instead of over all sub-networks."""
        seen: set[str] = set()
        W = self._width_sets()

        def emit(*specs: BlockSpec) -> Iterator[BlockSpec]:
            for spec in specs:
                if spec.key not in seen:
                    seen.add(spec.key)
                    yield spec

        def c2fs(ci: int, co: int, shortcut: bool, r: int) -> list[BlockSpec]:
            return [spec for n in DEPTHS for spec in _c2f(ci, co, n, shortcut, r)]

        for r in self.resolutions:
            r8, r16, r32 = r // 8, r // 16, r // 32
            for w in W["b2"]:
                yield from emit(_conv(3, _stem(w), 3, 2, r), _conv(_stem(w), w, 3, 2, r // 2))
            for s, name in enumerate(BLOCKS[:4]):
                h = r >> (s + 1)
                for w in W[name]:
                    yield from emit(*c2fs(w, w, True, h // 2))
                    for p in W[BLOCKS[s - 1]] if s else []:
                        yield from emit(_conv(p, w, 3, 2, h))
            for b5 in W["b5"]:
                yield from emit(_simple("sppf", b5, r32), _simple("up", b5, r32))
                for b4 in W["b4"]:
                    for t4 in W["t4"]:
                        yield from emit(*c2fs(b5 + b4, t4, False, r16), _simple("up", t4, r16))
            for t4 in W["t4"]:
                for b3 in W["b3"]:
                    for t3 in W["t3"]:
                        yield from emit(*c2fs(t4 + b3, t3, False, r8), _conv(t3, t3, 3, 2, r8), _head(t3, t3, r8))
                        for n4 in W["n4"]:
                            yield from emit(*c2fs(t3 + t4, n4, False, r16), _conv(n4, n4, 3, 2, r16),
                                            _head(n4, t3, r16))
            for n4 in W["n4"]:
                for b5 in W["b5"]:
                    for n5 in W["n5"]:
                        yield from emit(*c2fs(n4 + b5, n5, False, r32))
            for t3 in W["t3"]:
                for n5 in W["n5"]:
                    yield from emit(_head(n5, t3, r32))

    def build_block(self, key: str, *, num_classes: int) -> nn.Module:
        kind, *fields = key.split(":")
        try:
            f = {m.group(1): int(m.group(2)) for m in (re.fullmatch(r"([a-z]+)(\d+)", p) for p in fields)}
        except AttributeError:
            raise ValueError(f"malformed block key {key!r}") from None
        return make_block(kind, f, num_classes).eval()

    # --- task ----------------------------------------------------------------------------
    def _criterion(self, nc: int, device: torch.device) -> Any:
        from ultralytics.utils.loss import v8DetectionLoss

        key = (nc, str(device))
        if key not in self._criteria:
            host = nn.Module()  # what v8DetectionLoss reads: .args gains, .model[-1] head facts, a device
            host.register_parameter("device_probe", nn.Parameter(torch.zeros(1, device=device), requires_grad=False))
            host.args = SimpleNamespace(**LOSS_GAINS)
            host.model = [SimpleNamespace(stride=torch.tensor(STRIDES, dtype=torch.float32, device=device),
                                          nc=nc, reg_max=REG_MAX)]
            self._criteria[key] = v8DetectionLoss(host)
        return self._criteria[key]

    def loss(self, outputs: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Ultralytics' v8 detection loss (task-aligned assignment; CIoU box, BCE class and DFL
        terms weighted 7.5, 0.5, 1.5), summed to a scalar per image: unlike Ultralytics' trainer
        it is not multiplied by the batch size. `targets` is the Ultralytics batch dict."""
        raw = raw_outputs(outputs)
        if raw is None:
            raise TypeError("loss needs the raw head outputs: run the model in train mode")
        loss, _ = self._criterion(raw["scores"].shape[1], raw["scores"].device)(raw, targets)
        return loss.sum() / raw["scores"].shape[0]

    def as_teacher(self, model: nn.Module) -> nn.Module:
        """Out of export mode, so eval gives (decoded, raw) and distillation takes the KL between
        DFL distributions, as from the supernet in training. From the decoded boxes alone (the
        1 - CIoU path) fine-tuning diverged on generated shapes (bench/nas_detect.py)."""
        model.model[-1].export = False
        return model

    def distill_loss(self, student: Any, teacher: Any) -> torch.Tensor:
        """Distillation from the teacher's head outputs (feature maps of any width share the head's
        strides). Class scores: BCE against the teacher's probabilities, normalised like YOLO's
        class loss; boxes: KL between the DFL distributions (raw teacher) or 1 - CIoU against the
        decoded boxes (a teacher in export mode), weighted by the teacher's confidence. A teacher
        at another input size is resampled per level to the student's grid, and its DFL
        distributions rescaled (distances are in stride units, which grow with the input)."""
        s = raw_outputs(student)
        if s is None:
            raise TypeError("the student's outputs must be raw head outputs (train mode)")
        s_sizes = [tuple(f.shape[2:]) for f in s["feats"]]
        t = raw_outputs(teacher)
        if t is not None:
            t_sizes = [tuple(f.shape[2:]) for f in t["feats"]]
            t_boxes = resample_levels(t["boxes"].detach(), t_sizes, s_sizes)
            t_prob = resample_levels(t["scores"].detach(), t_sizes, s_sizes).sigmoid()
        else:
            decoded = teacher.detach()
            t_sizes = level_sizes(decoded.shape[-1])
            scale = decoded.new_tensor(t_sizes[0][1] * STRIDES[0])  # boxes to fractions of the image
            t_boxes = resample_levels(decoded[:, :4] / scale, t_sizes, s_sizes)
            t_prob = resample_levels(decoded[:, 4:], t_sizes, s_sizes)
        weight = t_prob.amax(1)
        cls = F.binary_cross_entropy_with_logits(s["scores"], t_prob, reduction="sum") / t_prob.sum().clamp(min=1)
        b, _, a = s["boxes"].shape
        if t is not None:
            log_p = F.log_softmax(s["boxes"].view(b, 4, REG_MAX, a), 2)
            q = F.softmax(t_boxes.view(b, 4, REG_MAX, a), 2)
            if t_sizes != s_sizes:
                q = torch.einsum("bsja,jk->bska", q, dfl_bin_transfer(s_sizes[0][1] / t_sizes[0][1], q))
            box_err = (q * (q.clamp(min=1e-9).log() - log_p)).sum(2).mean(1)
        else:
            from ultralytics.utils.metrics import bbox_iou

            s_boxes = decode_boxes(s["boxes"], s["feats"]) / (s_sizes[0][1] * STRIDES[0])
            box_err = 1 - bbox_iou(s_boxes.transpose(1, 2), t_boxes.transpose(1, 2), xywh=True, CIoU=True)[..., 0]
        box = (box_err * weight).sum() / weight.sum().clamp(min=1e-6)
        return cls + box

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, *, arch: Arch, device: torch.device) -> float:
        """mAP50-95 in [0, 1] (Ultralytics NMS at conf 0.001, IoU 0.7; Ultralytics `ap_per_class`
        over the classes present in the targets; 0 when there are none)."""
        from ultralytics.utils.metrics import ap_per_class, box_iou
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import xywh2xyxy

        if isinstance(model, Supernet):
            model.set_active(arch)
        model.eval()
        size, iouv = self.input_size(arch), np.linspace(0.5, 0.95, 10)
        stats: list[tuple[np.ndarray, ...]] = []
        n_targets = 0
        for images, targets in loader:
            images = images.to(device).float()
            if images.shape[-2:] != (size, size):
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                       antialias=images.shape[-1] > size)
            dets = non_max_suppression(model(images), conf_thres=0.001, iou_thres=0.7, max_det=300)
            bidx = targets["batch_idx"].view(-1).long()
            for i, det in enumerate(dets):
                det = det.cpu()
                gt_cls = targets["cls"].view(-1)[bidx == i].cpu()
                gt = xywh2xyxy(targets["bboxes"][bidx == i].cpu().float() * size)
                n_targets += len(gt_cls)
                if len(det) and len(gt):
                    correct = match_predictions(det[:, 5], gt_cls, box_iou(gt, det[:, :4]), iouv)
                else:
                    correct = np.zeros((len(det), len(iouv)), dtype=bool)
                stats.append((correct, det[:, 4].numpy(), det[:, 5].numpy(), gt_cls.numpy()))
        if not n_targets or not stats:
            return 0.0
        tp, conf, pred_cls, target_cls = (np.concatenate(parts) for parts in zip(*stats))
        if not len(tp):
            return 0.0
        ap = ap_per_class(tp, conf, pred_cls, target_cls)[5]
        return float(np.clip(ap.mean(), 0.0, 1.0)) if ap.size else 0.0


# --- data -------------------------------------------------------------------------------------
class DetectionDataset(torch.utils.data.Dataset):
    """(HxWx3 uint8 image, (k, 5) boxes [cls, x1, y1, x2, y2] in pixels) samples, letterboxed to
    size x size (aspect kept, grey 114 padding); yields (CHW float in [0, 1], boxes in the
    letterboxed image's pixels)."""

    def __init__(self, samples: Sequence[tuple[np.ndarray, Any]], *, size: int):
        self.samples, self.size = list(samples), int(size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        image, boxes = self.samples[i]
        image = np.asarray(image)
        image = image[..., None] if image.ndim == 2 else image
        if image.shape[2] != 3:  # grey or RGBA: the networks take RGB
            image = np.ascontiguousarray(np.repeat(image, 3, 2) if image.shape[2] == 1 else image[..., :3])
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 5)).clone()
        h, w = image.shape[:2]
        if (h, w) != (self.size, self.size):
            scale = self.size / max(h, w)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            canvas = np.full((self.size, self.size, 3), 114, dtype=np.uint8)
            left, top = (self.size - nw) // 2, (self.size - nh) // 2
            canvas[top:top + nh, left:left + nw] = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
            image = canvas
            boxes[:, 1:] = boxes[:, 1:] * torch.tensor([nw / w, nh / h, nw / w, nh / h]) + \
                torch.tensor([left, top, left, top], dtype=torch.float32)
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255), boxes


def collate_detection(batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stack images; targets as the Ultralytics batch dict: batch_idx (N,), cls (N, 1) and
    bboxes (N, 4) normalised xywh, from (k, 5) [cls, x1, y1, x2, y2] pixel boxes."""
    images = torch.stack([img for img, _ in batch])
    h, w = images.shape[-2:]
    idx, cls, xywh = [], [], []
    for i, (_, boxes) in enumerate(batch):
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 5))
        idx.append(torch.full((len(b),), float(i)))
        cls.append(b[:, :1])
        xywh.append(torch.stack([(b[:, 1] + b[:, 3]) / 2 / w, (b[:, 2] + b[:, 4]) / 2 / h,
                                 (b[:, 3] - b[:, 1]) / w, (b[:, 4] - b[:, 2]) / h], 1))
    return images, {"batch_idx": torch.cat(idx), "cls": torch.cat(cls), "bboxes": torch.cat(xywh)}
