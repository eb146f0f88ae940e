"""ResNet-style classifier search space (OFA-ResNet-like, sized for small inputs).

Genes: input resolution; per stage a depth (blocks) and a width multiplier; per block the
bottleneck expand ratio and the middle kernel size. Four stages of up to three bottleneck
blocks each give about 2e10 sub-networks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autonn.dynamic import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, make_divisible
from autonn.spaces.base import Arch, BlockSpec, SearchSpace, Supernet, register_search_space

DEPTHS = (1, 2, 3)
WIDTH_MULTS = (0.65, 0.8, 1.0)
EXPANDS = (0.25, 0.35)
KERNELS = (3, 5)
STRIDES = (1, 2, 2, 2)
MAX_DEPTH = max(DEPTHS)


class Bottleneck(nn.Module):
    """The static bottleneck an extracted sub-network is made of."""

    def __init__(self, cin: int, cout: int, mid: int, kernel: int, stride: int, project: bool):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if project:
            pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x))


class Head(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.fc = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DynamicBottleneck(nn.Module):
    def __init__(self, max_in: int, max_out: int, stride: int, project: bool):
        super().__init__()
        max_mid = make_divisible(max_out * max(EXPANDS))
        self.stride, self.project = stride, project
        self.conv1, self.bn1 = DynamicConv2d(max_in, max_mid, 1), DynamicBatchNorm2d(max_mid)
        self.conv2, self.bn2 = DynamicConv2d(max_mid, max_mid, max(KERNELS), stride), DynamicBatchNorm2d(max_mid)
        self.conv3, self.bn3 = DynamicConv2d(max_mid, max_out, 1), DynamicBatchNorm2d(max_out)
        if project:
            self.sc_conv, self.sc_bn = DynamicConv2d(max_in, max_out, 1), DynamicBatchNorm2d(max_out)

    def configure(self, out: int, mid: int, kernel: int) -> None:
        self.conv1.active_out = self.conv2.active_out = mid
        self.conv2.active_kernel = kernel
        self.conv3.active_out = out
        if self.project:
            self.sc_conv.active_out = out

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.project:
            return x
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        return self.sc_bn(self.sc_conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self._shortcut(x))

    def extract(self, cin: int) -> Bottleneck:
        mid, out, k = self.conv1.active_out, self.conv3.active_out, self.conv2.active_kernel
        block = Bottleneck(cin, out, mid, k, self.stride, self.project)
        block.conv1, block.bn1 = self.conv1.extract(cin), self.bn1.extract(mid)
        block.conv2, block.bn2 = self.conv2.extract(mid), self.bn2.extract(mid)
        block.conv3, block.bn3 = self.conv3.extract(mid), self.bn3.extract(out)
        if self.project:
            pool = block.shortcut[0]
            block.shortcut = nn.Sequential(pool, self.sc_conv.extract(cin), self.sc_bn.extract(out))
        return block


class ResNetSupernet(Supernet):
    def __init__(self, space: ResNetSearchSpace, num_classes: int):
        super().__init__()
        self.space = space
        self.stem_conv = nn.Conv2d(3, space.stem_width, 3, space.stem_stride, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(space.stem_width)
        self.stages = nn.ModuleList()
        cin = space.stem_width
        for s, base in enumerate(space.base_widths):
            self.stages.append(nn.ModuleList(
                DynamicBottleneck(cin if b == 0 else base, base, STRIDES[s] if b == 0 else 1, project=b == 0)
                for b in range(MAX_DEPTH)))
            cin = base
        self.head = DynamicLinear(space.base_widths[-1], num_classes)
        # Zero-init the last BN gamma of every residual block (Goyal et al. 2017; BigNAS): each
        # block starts as its shortcut, so shallow and deep sub-networks begin as the same function
        # and the shared weights are not first shaped by the largest one alone. On the digits NAS
        # bench (8 epochs) it lifted small sub-networks' in-supernet test accuracy by 1-4 points
        # (13-15 at a lower learning rate) and left standalone training of the same archs as good.
        for stage in self.stages:
            for block in stage:
                nn.init.zeros_(block.bn3.bn.weight)
        self.active: Arch = space.largest()
        self.set_active(self.active)

    def set_active(self, arch: Arch) -> None:
        arch = self.space.validate(arch)
        for s, stage in enumerate(self.stages):
            out = self.space.stage_width(s, arch)
            for b, block in enumerate(stage):
                i = s * MAX_DEPTH + b
                block.configure(out, self.space.mid_width(out, arch["expands"][i]), arch["kernels"][i])
        self.active = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        for s, stage in enumerate(self.stages):
            for block in stage[: self.active["depths"][s]]:
                x = block(x)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def extract(self, arch: Arch) -> nn.Module:
        self.set_active(arch)
        stem = nn.Sequential(nn.Conv2d(3, self.space.stem_width, 3, self.space.stem_stride, 1, bias=False),
                             nn.BatchNorm2d(self.space.stem_width), nn.ReLU())
        stem[0].load_state_dict(self.stem_conv.state_dict())
        stem[1].load_state_dict(self.stem_bn.state_dict())
        layers: list[nn.Module] = [stem]
        cin = self.space.stem_width
        for s, stage in enumerate(self.stages):
            for block in stage[: self.active["depths"][s]]:
                layers.append(block.extract(cin))
                cin = block.conv3.active_out
        layers.append(Head(self.head.extract(cin)))
        return nn.Sequential(*layers).eval()


@register_search_space("resnet_cls")
class ResNetSearchSpace(SearchSpace):
    task = "classify"

    def __init__(self, *, resolutions: Iterable[int] = (128, 144, 160, 176, 192),
                 base_widths: Iterable[int] = (64, 128, 256, 512), stem_width: int = 32, stem_stride: int = 2):
        self.resolutions = tuple(sorted(int(r) for r in resolutions))
        self.base_widths = tuple(int(w) for w in base_widths)
        self.stem_width, self.stem_stride = int(stem_width), int(stem_stride)
        if len(self.base_widths) != len(STRIDES):
            raise ValueError(f"base_widths needs {len(STRIDES)} stage widths")

    @property
    def options(self) -> dict[str, Any]:
        return {"resolutions": list(self.resolutions), "base_widths": list(self.base_widths),
                "stem_width": self.stem_width, "stem_stride": self.stem_stride}

    # --- configs -------------------------------------------------------------------------
    def _genes(self) -> dict[str, tuple]:
        n_blocks = len(STRIDES) * MAX_DEPTH
        return {"depths": (len(STRIDES), DEPTHS), "widths": (len(STRIDES), WIDTH_MULTS),
                "expands": (n_blocks, EXPANDS), "kernels": (n_blocks, KERNELS)}

    def sample(self, rng: random.Random) -> Arch:
        arch: Arch = {"resolution": rng.choice(self.resolutions)}
        for gene, (n, choices) in self._genes().items():
            arch[gene] = [rng.choice(choices) for _ in range(n)]
        return arch

    def _extreme(self, pick) -> Arch:  # noqa: ANN001
        arch: Arch = {"resolution": pick(self.resolutions)}
        for gene, (n, choices) in self._genes().items():
            arch[gene] = [pick(choices)] * n
        return arch

    def largest(self) -> Arch:
        return self._extreme(max)

    def smallest(self) -> Arch:
        return self._extreme(min)

    def mutate(self, arch: Arch, rng: random.Random, prob: float = 0.1) -> Arch:
        # Inputs come from sample/mutate/crossover (valid by construction): no re-validation
        # on this hot path of the search.
        child = {k: list(v) if isinstance(v, list) else v for k, v in arch.items()}
        if rng.random() < prob:
            child["resolution"] = rng.choice(self.resolutions)
        for gene, (n, choices) in self._genes().items():
            for i in range(n):
                if rng.random() < prob:
                    child[gene][i] = rng.choice(choices)
        return child

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        # Genes are independent, so a uniform crossover of two valid archs is valid.
        return {k: [x if rng.random() < 0.5 else y for x, y in zip(v, b[k], strict=True)] if isinstance(v, list)
                else (v if rng.random() < 0.5 else b[k]) for k, v in a.items()}

    def validate(self, arch: Arch) -> Arch:
        if not isinstance(arch, dict):
            raise ValueError("an arch config is a JSON object")
        unknown = set(arch) - {"resolution", *self._genes()}
        if unknown:
            raise ValueError(f"unknown genes: {', '.join(sorted(unknown))}")
        if arch.get("resolution") not in self.resolutions:
            raise ValueError(f"resolution={arch.get('resolution')!r} is not one of {list(self.resolutions)}")
        clean: Arch = {"resolution": int(arch["resolution"])}
        for gene, (n, choices) in self._genes().items():
            values = arch.get(gene)
            if not isinstance(values, list) or len(values) != n:
                raise ValueError(f"{gene} must be a list of {n} values")
            for i, v in enumerate(values):
                if v not in choices:
                    raise ValueError(f"{gene}[{i}]={v!r} is not one of {list(choices)}")
            clean[gene] = [type(choices[0])(v) for v in values]
        return clean

    def cardinality(self) -> int:
        per_block = len(EXPANDS) * len(KERNELS)
        per_stage = sum(per_block ** d for d in DEPTHS) * len(WIDTH_MULTS)
        return len(self.resolutions) * per_stage ** len(STRIDES)

    def encode(self, arch: Arch) -> list[float]:
        """Per block: active flag, expand, kernel (zeros when the block is skipped), plus
        resolution and stage widths, all scaled to about [0, 1]."""
        arch = self.validate(arch)
        r0, r1 = self.resolutions[0], self.resolutions[-1]
        vec = [(arch["resolution"] - r0) / max(1, r1 - r0)]
        vec += [(w - WIDTH_MULTS[0]) / (WIDTH_MULTS[-1] - WIDTH_MULTS[0]) for w in arch["widths"]]
        for s in range(len(STRIDES)):
            for b in range(MAX_DEPTH):
                i, on = s * MAX_DEPTH + b, b < arch["depths"][s]
                vec += [float(on), float(on) * (arch["expands"][i] == EXPANDS[-1]),
                        float(on) * (arch["kernels"][i] == KERNELS[-1])]
        return vec

    def input_size(self, arch: Arch) -> int:
        return int(arch["resolution"])

    def stage_width(self, stage: int, arch: Arch) -> int:
        return make_divisible(self.base_widths[stage] * arch["widths"][stage])

    def mid_width(self, out: int, expand: float) -> int:
        return make_divisible(out * expand)

    # --- networks ------------------------------------------------------------------------
    def build_supernet(self, *, num_classes: int) -> ResNetSupernet:
        return ResNetSupernet(self, num_classes)

    @staticmethod
    def _out_size(size: int, stride: int) -> int:
        return (size - 1) // stride + 1

    def blocks(self, arch: Arch) -> list[BlockSpec]:
        arch = self.validate(arch)
        r = arch["resolution"]
        specs = [BlockSpec(f"stem:r{r}", (1, 3, r, r))]
        r, cin = self._out_size(r, self.stem_stride), self.stem_width
        for s in range(len(STRIDES)):
            out = self.stage_width(s, arch)
            for b in range(arch["depths"][s]):
                i, stride = s * MAX_DEPTH + b, STRIDES[s] if b == 0 else 1
                mid = self.mid_width(out, arch["expands"][i])
                specs.append(BlockSpec(f"bneck:i{cin}:o{out}:m{mid}:k{arch['kernels'][i]}:s{stride}:p{int(b == 0)}:r{r}",
                                       (1, cin, r, r)))
                r, cin = self._out_size(r, stride), out
        specs.append(BlockSpec(f"head:i{cin}:r{r}", (1, cin, r, r)))
        return specs

    def all_blocks(self) -> Iterator[BlockSpec]:
        seen: set[str] = set()
        stage_widths = [sorted({make_divisible(w * m) for m in WIDTH_MULTS}) for w in self.base_widths]
        for res in self.resolutions:
            probe = {"resolution": res, "depths": [MAX_DEPTH] * len(STRIDES), "widths": [1.0] * len(STRIDES),
                     "expands": [EXPANDS[0]] * len(STRIDES) * MAX_DEPTH, "kernels": [KERNELS[0]] * len(STRIDES) * MAX_DEPTH}
            yield from self._unseen(seen, self.blocks(probe)[:1])
            r, cins = self._out_size(res, self.stem_stride), [self.stem_width]
            for s in range(len(STRIDES)):
                for b in range(MAX_DEPTH):
                    stride = STRIDES[s] if b == 0 else 1
                    for cin in cins if b == 0 else [None]:
                        for out in stage_widths[s]:
                            for e in EXPANDS:
                                for k in KERNELS:
                                    c = cin if cin is not None else out
                                    key = f"bneck:i{c}:o{out}:m{self.mid_width(out, e)}:k{k}:s{stride}:p{int(b == 0)}:r{r}"
                                    yield from self._unseen(seen, [BlockSpec(key, (1, c, r, r))])
                    r = self._out_size(r, stride)
                cins = stage_widths[s]
            for cin in cins:
                yield from self._unseen(seen, [BlockSpec(f"head:i{cin}:r{r}", (1, cin, r, r))])

    @staticmethod
    def _unseen(seen: set[str], specs: list[BlockSpec]) -> Iterator[BlockSpec]:
        for spec in specs:
            if spec.key not in seen:
                seen.add(spec.key)
                yield spec

    def build_block(self, key: str, *, num_classes: int) -> nn.Module:
        kind, *fields = key.split(":")
        f = {part[0]: int(part[1:]) for part in fields}
        if kind == "stem":
            return nn.Sequential(nn.Conv2d(3, self.stem_width, 3, self.stem_stride, 1, bias=False),
                                 nn.BatchNorm2d(self.stem_width), nn.ReLU()).eval()
        if kind == "bneck":
            return Bottleneck(f["i"], f["o"], f["m"], f["k"], f["s"], bool(f["p"])).eval()
        if kind == "head":
            return Head(nn.Linear(f["i"], num_classes)).eval()
        raise ValueError(f"unknown block key {key!r}")

    # --- task ----------------------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, label_smoothing=0.1)

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        # Soft cross-entropy against the largest network's distribution (in-place distillation).
        return torch.sum(-F.softmax(teacher.detach(), dim=1) * F.log_softmax(student, dim=1), dim=1).mean()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, *, arch: Arch, device: torch.device) -> float:
        model.eval()
        size, correct, total = self.input_size(arch), 0, 0
        for images, labels in loader:
            images = images.to(device)
            if images.shape[-1] != size:
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
            correct += (model(images).argmax(1).cpu() == labels).sum().item()
            total += len(labels)
        return correct / max(1, total)
