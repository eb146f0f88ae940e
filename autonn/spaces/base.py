"""What every search space provides, and the registry (`@register_search_space`).

A sub-network is a small JSON arch config (`Arch`). A space samples, mutates and validates
configs, builds a weight-sharing supernet that runs any config, extracts any config as a
standalone `nn.Module` with copied weights, names the blocks a config is made of (for per-block
latency tables), and supplies the task's loss, distillation loss and metric.
"""

from __future__ import annotations

import difflib
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

Arch = dict[str, Any]


def hashable_arch(arch: Arch) -> tuple:
    """A hashable identity of an arch (a search makes ~10^5 of these: tuples, not JSON)."""
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(arch.items()))


@dataclass(frozen=True)
class BlockSpec:
    """One block of a sub-network as the latency table knows it: a stable string key (it says
    everything that changes the block's cost: type, channels, kernel, stride, input size) and the
    shape of its input at batch 1."""

    key: str
    input_shape: tuple[int, ...]


class Supernet(nn.Module, ABC):
    """The weight-sharing network. `set_active(arch)` selects a sub-network for `forward`."""

    @abstractmethod
    def set_active(self, arch: Arch) -> None: ...

    @abstractmethod
    def extract(self, arch: Arch) -> nn.Module:
        """A standalone module for `arch` with copied weights (eval mode gives identical outputs)."""


class SearchSpace(ABC):
    name: ClassVar[str]
    task: ClassVar[str]  # "classify" | "detect"

    # --- configs -------------------------------------------------------------------------
    @abstractmethod
    def sample(self, rng: random.Random) -> Arch: ...

    @abstractmethod
    def largest(self) -> Arch: ...

    @abstractmethod
    def smallest(self) -> Arch: ...

    @abstractmethod
    def mutate(self, arch: Arch, rng: random.Random, prob: float = 0.1) -> Arch: ...

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Uniform crossover, element-wise for list-valued genes."""
        child: Arch = {}
        for key in a:
            if isinstance(a[key], list):
                child[key] = [rng.choice(pair) for pair in zip(a[key], b[key], strict=True)]
            else:
                child[key] = rng.choice((a[key], b[key]))
        return self.validate(child)

    @abstractmethod
    def validate(self, arch: Arch) -> Arch:
        """The normalised config, or ValueError with a message that names the bad gene."""

    @abstractmethod
    def cardinality(self) -> int:
        """How many distinct sub-networks the space holds."""

    @abstractmethod
    def encode(self, arch: Arch) -> list[float]:
        """A fixed-length numeric vector for predictors."""

    @abstractmethod
    def input_size(self, arch: Arch) -> int:
        """The square input resolution of this sub-network."""

    def input_sizes(self) -> list[int]:
        """Every input resolution the space offers."""
        return sorted(int(r) for r in getattr(self, "resolutions", ()))

    def pin_input_size(self, arch: Arch, size: int) -> Arch:
        """`arch` at input resolution `size` (spaces whose gene is not `resolution` override)."""
        return {**arch, "resolution": int(size)}

    def distinct_samples(self, n: int, *, seed: int, extremes: bool = True) -> list[Arch]:
        """Up to `n` distinct validated archs: the largest and smallest first (with `extremes`),
        then random ones from a `seed`ed generator. Predictor fits, latency tables and benchmarks
        all draw their sub-networks this way."""
        rng, seen, out = random.Random(seed), set(), []
        candidates = [self.largest(), self.smallest()] if extremes else []
        for _ in range(50 * n):
            arch = candidates.pop(0) if candidates else self.sample(rng)
            key = self.arch_key(arch)
            if key not in seen:
                seen.add(key)
                out.append(self.validate(arch))
            if len(out) >= n:
                break
        return out

    def arch_key(self, arch: Arch) -> str:
        import json

        return json.dumps(self.validate(arch), sort_keys=True, separators=(",", ":"))

    # --- networks ------------------------------------------------------------------------
    @abstractmethod
    def build_supernet(self, *, num_classes: int) -> Supernet: ...

    @abstractmethod
    def blocks(self, arch: Arch) -> list[BlockSpec]:
        """The blocks `arch` runs, in order; their latencies add up to the network's."""

    @abstractmethod
    def all_blocks(self) -> Iterable[BlockSpec]:
        """Every distinct block any sub-network can run (the latency table's rows)."""

    @abstractmethod
    def build_block(self, key: str, *, num_classes: int) -> nn.Module:
        """A standalone module of the block named by `key` (random weights are fine: it is timed)."""

    # --- task ----------------------------------------------------------------------------
    @abstractmethod
    def loss(self, outputs: Any, targets: Any) -> torch.Tensor: ...

    @abstractmethod
    def distill_loss(self, student: Any, teacher: Any) -> torch.Tensor: ...

    def as_teacher(self, model: nn.Module) -> nn.Module:
        """An extracted sub-network set to give, in eval mode, the outputs `distill_loss` learns
        best from (by default what it gives anyway)."""
        return model

    @abstractmethod
    def evaluate(self, model: nn.Module, loader: Iterable, *, arch: Arch, device: torch.device) -> float:
        """The task metric in [0, 1]: top-1 accuracy (classify) or mAP50-95 (detect)."""


SEARCH_SPACES: dict[str, type[SearchSpace]] = {}


def register_search_space(name: str) -> Callable[[type[SearchSpace]], type[SearchSpace]]:
    def deco(cls: type[SearchSpace]) -> type[SearchSpace]:
        if name in SEARCH_SPACES:
            raise ValueError(f"search space {name!r} registered twice")
        cls.name = name
        SEARCH_SPACES[name] = cls
        return cls
    return deco


def get_search_space(name: str, **options: Any) -> SearchSpace:
    import autonn.spaces  # noqa: F401  (registers the built-in spaces)

    if name not in SEARCH_SPACES:
        close = difflib.get_close_matches(name, SEARCH_SPACES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown search space {name!r}{hint} (known: {', '.join(sorted(SEARCH_SPACES))})")
    return SEARCH_SPACES[name](**options)
