"""A device-independent cost for sub-networks: the FLOPs of their blocks.

Where no device latency table is at hand (training a supernet happens before a device is
chosen) the search still needs a cost axis to find which sub-networks are efficient. Every
distinct block of the space is counted once with torch's FLOP counter (291 blocks in 2.5 s for
the CIFAR-sized classification space here); a sub-network's cost is the sum over its blocks,
the same additive form the latency table uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autonn.export import count_flops
from autonn.spaces.base import Arch, SearchSpace, hashable_arch


class FlopsTable:
    """Callable like a latency predictor: archs -> MFLOPs at batch 1."""

    def __init__(self, *, space: SearchSpace, num_classes: int):
        self.space = space
        self.entries = {s.key: count_flops(space.build_block(s.key, num_classes=num_classes), tuple(s.input_shape))
                        for s in space.all_blocks()}
        self._cache: dict[tuple, float] = {}

    def mflops(self, arch: Arch) -> float:
        key = hashable_arch(arch)
        if key not in self._cache:
            self._cache[key] = sum(self.entries[s.key] for s in self.space.blocks(arch)) / 1e6
        return self._cache[key]

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([self.mflops(a) for a in archs], dtype=np.float64)
