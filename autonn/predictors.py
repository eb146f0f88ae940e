"""Accuracy predictor: measured (arch, metric) pairs -> a fast regressor on `space.encode(arch)`.

Which regressor ranks subnets best depends on how many pairs were measured and on how
non-linear the space's metric surface is, so three small models compete on K-fold Kendall tau
over the training split (tau, not RMSE: the evolutionary search only needs the ranking):

- ridge: linear; best with few pairs or when each gene has an additive effect, which is roughly
  true of OFA spaces (accuracy grows with depth, width, resolution);
- kernel ridge (RBF): captures gene interactions, exact closed form, cheap up to ~2,000 pairs;
- MLP ensemble (OFA's predictor family): scales to many pairs, averaged over members to cut the
  variance a single small-data MLP has.

The winner is scored on the held-out split (`report`), then refit on all pairs (measurements
are expensive; `report` keeps describing the held-out estimate). Every model predicts with
plain numpy and serialises to an npz of arrays plus JSON metadata: no pickle, so a predictor
loaded from storage cannot run code.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau

from autonn.pareto import nsga2, spread_points
from autonn.spaces.base import Arch, SearchSpace, get_search_space, hashable_arch
from autonn.train import ProgressFn, evaluate_subnet

FORMAT = "tango.autonn.predictor/1"
KRR_MAX_PAIRS = 1500  # beyond this, n x n solves and n-column predictions get slow: use the MLP/ridge


def measure_archs(*, space: SearchSpace, supernet: torch.nn.Module, archs: Sequence[Arch], calib_loader: Iterable,
                  val_loader: Iterable, device: torch.device, progress: ProgressFn | None = None,
                  calib_batches: int = 10, val_batches: int | None = None) -> list[tuple[dict, float]]:
    """The metric of each arch after BN recalibration (the predictor's training pairs)."""
    pairs: list[tuple[dict, float]] = []
    for i, arch in enumerate(archs):
        metric = evaluate_subnet(space=space, supernet=supernet, arch=arch, calib_loader=calib_loader,
                                 val_loader=val_loader, device=device, calib_batches=calib_batches,
                                 val_batches=val_batches)
        pairs.append((space.validate(arch), metric))
        if progress is not None:
            progress((i + 1) / len(archs), f"measured {i + 1}/{len(archs)} subnets", {"index": i, "metric": metric})
    return pairs


# --- the three candidate regressors: fit -> arrays, predict from arrays -----------------------
def _fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float, seed: int) -> dict[str, np.ndarray]:
    a = np.hstack([x, np.ones((len(x), 1))])
    reg = alpha * np.eye(a.shape[1])
    reg[-1, -1] = 0.0  # never shrink the intercept
    return {"w": np.linalg.solve(a.T @ a + reg, a.T @ y)}


def _predict_ridge(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return x @ p["w"][:-1] + p["w"][-1]


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    k = a @ b.T  # in place from here on: prediction speed is dominated by this n x m array
    k *= -2.0
    k += (a * a).sum(1)[:, None]
    k += (b * b).sum(1)[None, :]
    np.maximum(k, 0.0, out=k)
    k *= -gamma
    return np.exp(k, out=k)


def _fit_krr(x: np.ndarray, y: np.ndarray, alpha: float, gamma: float, seed: int) -> dict[str, np.ndarray]:
    k = _rbf(x, x, gamma)
    return {"x": x, "dual": np.linalg.solve(k + alpha * np.eye(len(x)), y), "gamma": np.array(gamma)}


def _predict_krr(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return _rbf(x, p["x"], float(p["gamma"])) @ p["dual"]


def _fit_mlp(x: np.ndarray, y: np.ndarray, members: int, hidden: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    params: dict[str, np.ndarray] = {}
    with torch.random.fork_rng(devices=[]):  # deterministic without disturbing the caller's RNG
        torch.manual_seed(seed)
        xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
        for m in range(members):
            net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                                      torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
            opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
            idx = torch.randint(0, len(x), (len(x),))  # bootstrap: members see different data
            for _ in range(steps):  # full batch: pair sets are small
                opt.zero_grad()
                torch.nn.functional.mse_loss(net(xt[idx]).squeeze(1), yt[idx]).backward()
                opt.step()
            for j, layer in enumerate(l for l in net if isinstance(l, torch.nn.Linear)):
                params[f"m{m}.w{j}"] = layer.weight.detach().numpy().T.astype(np.float64)
                params[f"m{m}.b{j}"] = layer.bias.detach().numpy().astype(np.float64)
    return params


def _predict_mlp(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    members = sorted({k.split(".")[0] for k in p})
    out = np.zeros(len(x))
    for m in members:
        h = x
        for j in range(3):
            h = h @ p[f"{m}.w{j}"] + p[f"{m}.b{j}"]
            if j < 2:
                h = np.maximum(h, 0.0)
        out += h[:, 0]
    return out / len(members)


FITTERS: dict[str, Callable[..., dict[str, np.ndarray]]] = {"ridge": _fit_ridge, "krr": _fit_krr, "mlp": _fit_mlp}
PREDICTORS: dict[str, Callable[[dict, np.ndarray], np.ndarray]] = {
    "ridge": _predict_ridge, "krr": _predict_krr, "mlp": _predict_mlp}


def _candidates(n: int, d: int) -> list[tuple[str, dict[str, Any]]]:
    """Ridge always; the non-linear models only with at least as many pairs as features. Below
    that, K-fold tau over a handful of pairs is noise, and it has picked an RBF model that is
    high only near the measured archs and flat elsewhere, whose 'front' is two or three points."""
    out: list[tuple[str, dict[str, Any]]] = [("ridge", {"alpha": a}) for a in (0.1, 1.0, 10.0)]
    if n < d:
        return out
    if n <= KRR_MAX_PAIRS:
        out += [("krr", {"alpha": a, "gamma": g / d}) for a in (0.03, 0.3) for g in (0.25, 1.0)]
    out.append(("mlp", {"members": 4, "hidden": 64, "steps": 300}))
    return out


def _tau(y: np.ndarray, pred: np.ndarray) -> float:
    tau = kendalltau(y, pred).statistic
    return 0.0 if not np.isfinite(tau) else float(tau)


class AccuracyPredictor:
    """Predicts the task metric of archs from `space.encode`; `report` holds held-out rmse/tau."""

    def __init__(self, *, space: SearchSpace, kind: str, hyper: dict[str, Any], params: dict[str, np.ndarray],
                 x_mean: np.ndarray, x_std: np.ndarray, y_mean: float, y_std: float, report: dict[str, Any]):
        self.space, self.kind, self.hyper, self.params = space, kind, hyper, params
        self.x_mean, self.x_std, self.y_mean, self.y_std = x_mean, x_std, float(y_mean), float(y_std)
        self.report = report

    @classmethod
    def fit(cls, *, space: SearchSpace, x: np.ndarray, y: np.ndarray, kind: str, hyper: dict[str, Any],
            seed: int = 0, report: dict[str, Any] | None = None) -> AccuracyPredictor:
        x_mean, x_std = x.mean(0), x.std(0)
        x_std = np.where(x_std > 1e-12, x_std, 1.0)  # genes that never vary in the pairs
        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        params = FITTERS[kind]((x - x_mean) / x_std, (y - y_mean) / y_std, seed=seed, **hyper)
        return cls(space=space, kind=kind, hyper=hyper, params=params, x_mean=x_mean, x_std=x_std,
                   y_mean=y_mean, y_std=y_std, report=report or {})

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.x_mean) / self.x_std
        return PREDICTORS[self.kind](self.params, z) * self.y_std + self.y_mean

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if len(archs) == 0:
            return np.zeros(0)
        return self.predict_features(np.array([self.space.encode(a) for a in archs], dtype=np.float64))

    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "kind": self.kind, "hyper": self.hyper, "y_mean": self.y_mean,
                "y_std": self.y_std, "report": self.report,
                "space": {"name": self.space.name, "options": dict(getattr(self.space, "options", {}) or {})}}
        arrays = {f"p/{k}": np.asarray(v) for k, v in self.params.items()}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                 x_mean=self.x_mean, x_std=self.x_std, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, space: SearchSpace | None = None) -> AccuracyPredictor:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("format") != FORMAT:
                raise ValueError("not a Tango accuracy predictor")
            params = {k[2:]: z[k] for k in z.files if k.startswith("p/")}
            x_mean, x_std = z["x_mean"], z["x_std"]
        if space is None:
            space = get_search_space(meta["space"]["name"], **meta["space"]["options"])
        elif space.name != meta["space"]["name"]:
            raise ValueError(f"predictor is for space {meta['space']['name']!r}, not {space.name!r}")
        return cls(space=space, kind=meta["kind"], hyper=meta["hyper"], params=params, x_mean=x_mean,
                   x_std=x_std, y_mean=meta["y_mean"], y_std=meta["y_std"], report=meta["report"])


def fit_accuracy_predictor(*, space: SearchSpace, pairs: Sequence[tuple[Arch, float]], holdout: float = 0.2,
                           seed: int = 0, folds: int = 3, refit: bool = True) -> AccuracyPredictor:
    """Select a regressor by K-fold tau on the training split, report it on the held-out split,
    then (refit=True) fit it again on every pair."""
    if len(pairs) < 10:
        raise ValueError(f"an accuracy predictor needs at least 10 measured subnets, got {len(pairs)}")
    x = np.array([space.encode(a) for a, _ in pairs], dtype=np.float64)
    y = np.array([float(m) for _, m in pairs], dtype=np.float64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = max(2, int(round(holdout * len(y))))
    test, train = order[:n_test], order[n_test:]

    fold_of = np.arange(len(train)) % folds
    scores: list[tuple[float, str, dict]] = []
    for kind, hyper in _candidates(len(train), x.shape[1]):
        taus = []
        for f in range(folds):
            tr, va = train[fold_of != f], train[fold_of == f]
            model = AccuracyPredictor.fit(space=space, x=x[tr], y=y[tr], kind=kind, hyper=hyper, seed=seed)
            taus.append(_tau(y[va], model.predict_features(x[va])))
        scores.append((float(np.mean(taus)), kind, hyper))
    best_tau, kind, hyper = max(scores, key=lambda s: s[0])

    model = AccuracyPredictor.fit(space=space, x=x[train], y=y[train], kind=kind, hyper=hyper, seed=seed)
    pred = model.predict_features(x[test])
    report = {"model": kind, "hyper": hyper, "rmse": float(np.sqrt(np.mean((pred - y[test]) ** 2))),
              "kendall_tau": _tau(y[test], pred), "n_train": int(len(train)), "n_test": int(len(test)),
              "cv_kendall_tau": best_tau, "refit_on_all": refit,
              "candidates": [{"model": k, "hyper": h, "cv_kendall_tau": t} for t, k, h in scores]}
    if not refit:
        model.report = report
        return model
    return AccuracyPredictor.fit(space=space, x=x, y=y, kind=kind, hyper=hyper, seed=seed, report=report)


def add_front_pairs(*, space: SearchSpace, pairs: Sequence[tuple[Arch, float]],
                    measure: Callable[..., list[tuple[Arch, float]]], cost: Callable[[list[Arch]], Any],
                    n_front: int, rounds: int = 2, seed: int = 0) -> list[tuple[Arch, float]]:
    """`pairs` (random sub-networks) plus `n_front` more, picked in `rounds` rounds: fit the
    predictor so far, search its Pareto front against `cost`, `measure(archs=...)` (measure_archs'
    shape) its share of archs not measured yet, spread over the front.

    Why: random training archs are the archs random search draws, so a predictor fitted on them
    is most accurate exactly where the search does *not* go. The search's front sits at the edge
    of the space (extreme depths, kernels, widths), where the fit extrapolates and its errors
    are selected for: the front is made of the archs it over-rates. Measuring some of them and
    refitting corrects the predictor where the search uses it."""
    pairs = [(space.validate(a), float(m)) for a, m in pairs]
    seen = {hashable_arch(a) for a, _ in pairs}
    todo = n_front
    for r in range(rounds):
        predictor = fit_accuracy_predictor(space=space, pairs=pairs, seed=seed)
        front = nsga2(space=space, accuracy=predictor.predict, latency=cost, seed=seed + r).front
        fresh = [p for p in sorted(front, key=lambda p: p.ms) if hashable_arch(p.arch) not in seen]
        picks = [p.arch for p in spread_points(fresh, todo // (rounds - r))]
        todo -= len(picks)
        if not picks:
            break
        pairs += measure(archs=picks)
        seen |= {hashable_arch(a) for a in picks}
    return pairs


def predictor_pairs(*, space: SearchSpace, measure: Callable[..., list[tuple[Arch, float]]],
                    cost: Callable[[list[Arch]], Any], n_archs: int, front_share: float, seed: int,
                    first: Sequence[Arch] = (), front_measure: Callable[..., list[tuple[Arch, float]]] | None = None,
                    ) -> list[tuple[Arch, float]]:
    """The accuracy predictor's (arch, metric) pairs as the train_supernet job picks them: `n_archs`
    in all, first `first` and random sub-networks (the largest and smallest among them), then
    `front_share` of them from the predictor's own fronts against `cost` (`add_front_pairs`), with
    at least 10 random ones kept so the first fit has something to go on. `measure(archs=...)`
    measures the random ones, `front_measure` (default `measure`) the front ones."""
    n_front = max(0, min(round(n_archs * front_share), n_archs - 10))
    archs = {space.arch_key(a): space.validate(a) for a in first}
    for a in space.distinct_samples(n_archs - n_front, seed=seed + 1):
        if len(archs) >= n_archs - n_front:
            break
        archs.setdefault(space.arch_key(a), a)
    pairs = measure(archs=list(archs.values()))
    if n_front:
        pairs = add_front_pairs(space=space, pairs=pairs, n_front=n_front, seed=seed, measure=front_measure or measure,
                                cost=cost)
    return pairs
