"""The per-block latency table and its learned correction (a predictor: arch -> ms).

A table holds, per block key, the block's median isolated latency minus the session overhead
of an empty model (so the overhead is not counted once per block). The sum of those entries
misses what only a whole network pays (one session call, activations streaming between blocks),
so a small model fitted on a few measured whole networks maps three features of an arch to ms:

  S  sum of the arch's block entries (ms)
  n  number of blocks
  A  activation traffic: elements of all block inputs, in millions

Candidates, from simplest: "sum" (S + overhead), "affine" (a*S + c), "linear" (a*S + b*n + c),
"linear_act" (a*S + b*n + d*A + c), "log" (exp(c0 + c1*log S + c2*n)). The linear ones minimise
squared *relative* error (the figure reported is MAPE); the one with the lowest leave-one-out
MAPE wins, a simpler one winning ties within 0.2 points, so 20-40 networks are enough.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from autonn.spaces.base import Arch, SearchSpace, get_search_space, hashable_arch

SCHEMA_VERSION = 1
MODELS = ("sum", "affine", "linear", "linear_act", "log")
_MIN_NETWORKS = {"sum": 0, "affine": 3, "linear": 6, "linear_act": 8, "log": 6}
_TIE = 0.002  # a more complex correction must beat a simpler one's LOO MAPE by 0.2 points
_CACHE_MAX = 200_000


class MissingBlockError(KeyError):
    """A block the table has no entry for; str() is the plain message, not KeyError's repr."""

    def __str__(self) -> str:
        return str(self.args[0])


def space_options(space: SearchSpace) -> dict[str, Any]:
    """The space's constructor options as plain JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(getattr(space, "options", {}) or {}, sort_keys=True))


@dataclasses.dataclass
class LatencyTable:
    space: str
    space_options: dict[str, Any]
    device: str
    runtime: str
    threads: int
    entries: dict[str, float]
    overhead_ms: float = 0.0
    noise_floor: float | None = None
    correction: dict[str, Any] = dataclasses.field(default_factory=lambda: {"model": "sum", "coef": []})
    n_networks_fit: int = 0
    num_classes: int | None = None
    build_seconds: float | None = None
    created_at: str = dataclasses.field(default_factory=lambda: datetime.now(UTC).isoformat())
    schema_version: int = SCHEMA_VERSION
    # Bound search space and per-arch feature cache; never serialised.
    _space: SearchSpace | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _cache: dict[tuple, tuple[float, int, float]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Tuples and lists must compare equal, as they would after a JSON round trip.
        self.space_options = json.loads(json.dumps(self.space_options, sort_keys=True))

    # --- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> LatencyTable:
        data = json.loads(text)
        if not isinstance(data, dict) or "entries" not in data:
            raise ValueError("not a latency table: the JSON has no 'entries'")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"latency table schema version {version!r} is not supported (this build reads "
                             f"version {SCHEMA_VERSION}); rebuild the table")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        return cls.from_json(Path(path).read_text())

    # --- compatibility --------------------------------------------------------------------
    def check_compatible(self, space: SearchSpace) -> None:
        theirs = space_options(space)
        if space.name != self.space or theirs != self.space_options:
            raise ValueError(
                f"this latency table was measured for search space {self.space!r} with options "
                f"{json.dumps(self.space_options, sort_keys=True)}, not {space.name!r} with options "
                f"{json.dumps(theirs, sort_keys=True)}; build a latency table for this search space")

    def bind(self, space: SearchSpace) -> LatencyTable:
        """Use `space` (checked compatible) to list an arch's blocks; returns self."""
        self.check_compatible(space)
        self._space = space
        return self

    def _the_space(self) -> SearchSpace:
        if self._space is None:
            self._space = get_search_space(self.space, **self.space_options)
        return self._space

    # --- prediction -----------------------------------------------------------------------
    def features(self, arch: Arch) -> tuple[float, int, float]:
        """(sum of block entries in ms, number of blocks, block-input elements in millions)."""
        # The unvalidated config as sorted tuples is a cheap cache key (a third of the cost of
        # json.dumps); equal dicts give equal keys, and a miss validates.
        key = hashable_arch(arch)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        specs = self._the_space().blocks(arch)
        total, elems = 0.0, 0
        for spec in specs:
            try:
                total += self.entries[spec.key]
            except KeyError:
                raise MissingBlockError(
                    f"block {spec.key!r} is not in the latency table for search space {self.space!r} "
                    f"({len(self.entries)} entries, measured on {self.device}); the table is out of date "
                    f"for this space: rebuild it with build_latency_table") from None
            elems += math.prod(spec.input_shape)
        feats = (total, len(specs), elems / 1e6)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = feats
        return feats

    def feature_matrix(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([self.features(a) for a in archs], dtype=np.float64).reshape(-1, 3)

    def predict_many(self, archs: Sequence[Arch]) -> np.ndarray:
        return apply_correction(self.correction, self.feature_matrix(archs), self.overhead_ms)

    def predict(self, arch: Arch) -> float:
        return float(self.predict_many([arch])[0])

    def predict_uncorrected(self, archs: Sequence[Arch]) -> np.ndarray:
        """Sum of block entries plus one session overhead: the table alone, for comparison."""
        return apply_correction({"model": "sum", "coef": []}, self.feature_matrix(archs), self.overhead_ms)

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:  # the search's latency-predictor protocol
        return self.predict_many(archs)


# --- the correction -----------------------------------------------------------------------
def _design(model: str, feats: np.ndarray) -> np.ndarray:
    s, n, a = feats[:, 0], feats[:, 1], feats[:, 2]
    one = np.ones_like(s)
    if model == "affine":
        return np.stack([s, one], 1)
    if model == "linear":
        return np.stack([s, n, one], 1)
    if model == "linear_act":
        return np.stack([s, n, a, one], 1)
    if model == "log":
        return np.stack([np.log(np.maximum(s, 1e-6)), n, one], 1)
    raise ValueError(f"unknown latency correction model {model!r} (known: {', '.join(MODELS)})")


def apply_correction(correction: dict[str, Any], feats: np.ndarray, overhead_ms: float) -> np.ndarray:
    model = correction.get("model", "sum")
    if model == "sum":
        return feats[:, 0] + overhead_ms
    y = _design(model, feats) @ np.asarray(correction["coef"], dtype=np.float64)
    return np.exp(y) if model == "log" else y


def _fit(model: str, feats: np.ndarray, y: np.ndarray) -> list[float] | None:
    """Coefficients, or None when the fit is unusable (non-positive slope or predictions)."""
    if model == "sum":
        return []
    x = _design(model, feats)
    if model == "log":
        # log-space residuals are relative errors already
        coef = np.linalg.lstsq(x, np.log(y), rcond=None)[0]
    else:
        coef = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)[0]
    if coef[0] <= 0 or np.any(apply_correction({"model": model, "coef": coef}, feats, 0.0) <= 0):
        return None
    return [float(c) for c in coef]


def _loo_mape(model: str, feats: np.ndarray, y: np.ndarray, overhead_ms: float) -> float:
    if model == "sum":
        return float(np.mean(np.abs(feats[:, 0] + overhead_ms - y) / y))
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = _fit(model, feats[keep], y[keep])
        if coef is None:
            return float("inf")
        pred = apply_correction({"model": model, "coef": coef}, feats[i:i + 1], overhead_ms)[0]
        errors.append(abs(pred - y[i]) / y[i])
    return float(np.mean(errors))


def fit_correction(*, table: LatencyTable, space: SearchSpace,
                   measured: Sequence[tuple[Arch, float]]) -> LatencyTable:
    """A copy of `table` whose predictions are corrected by the candidate model with the lowest
    leave-one-out MAPE on the `measured` (arch, whole-network ms) pairs."""
    table.check_compatible(space)
    fitted = dataclasses.replace(table).bind(space)
    if not measured:
        return fitted
    feats = fitted.feature_matrix([a for a, _ in measured])
    y = np.array([float(ms) for _, ms in measured], dtype=np.float64)
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("measured latencies must be positive and finite")
    scores: dict[str, float] = {}
    best = "sum"
    for model in MODELS:  # simplest first, so ties go to the simpler model
        if len(y) < _MIN_NETWORKS[model]:
            continue
        scores[model] = _loo_mape(model, feats, y, table.overhead_ms)
        if scores[model] < scores[best] - _TIE:
            best = model
    coef = _fit(best, feats, y)
    if coef is None:  # unusable on all points although fine leave-one-out: do not correct
        best, coef = "sum", []
    fitted.correction = {"model": best, "coef": coef, "features": ["sum_ms", "n_blocks", "input_melems"],
                         "loo_mape": {k: round(v, 5) for k, v in scores.items()}}
    fitted.n_networks_fit = len(y)
    return fitted
