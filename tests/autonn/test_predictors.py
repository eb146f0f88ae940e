from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from autonn.export import count_flops
from autonn.flops import FlopsTable
from autonn.pareto import hypervolume_2d, nsga2
from autonn.predictors import AccuracyPredictor, add_front_pairs, fit_accuracy_predictor, measure_archs
from autonn.spaces.base import get_search_space, hashable_arch
from tests.autonn.test_train import SPACE_OPTIONS, digits

SPACE = get_search_space("resnet_cls", **SPACE_OPTIONS)


def synthetic_metric(archs, *, seed: int = 0, noise: float = 0.0, nonlinear: bool = False) -> list[float]:
    """A known function of encode(arch) + noise: a stand-in for measuring subnets."""
    x = np.array([SPACE.encode(a) for a in archs])
    w = np.random.default_rng(42).uniform(0.0, 1.0, x.shape[1])
    score = x @ w / w.sum()
    if nonlinear:  # saturating, with an interaction between resolution and the widths
        score = np.tanh(3 * score) + 0.3 * x[:, 0] * x[:, 1:5].mean(1)
    return (0.4 + 0.4 * score + np.random.default_rng(seed).normal(0, noise, len(archs))).tolist()


def synthetic_pairs(n: int, *, seed: int = 0, noise: float = 0.01, nonlinear: bool = False):
    rng = random.Random(seed)
    archs = [SPACE.sample(rng) for _ in range(n)]
    return list(zip(archs, synthetic_metric(archs, seed=seed, noise=noise, nonlinear=nonlinear), strict=True))


@pytest.fixture(scope="module")
def linear_predictor():
    return fit_accuracy_predictor(space=SPACE, pairs=synthetic_pairs(300), seed=0)


def test_predictor_ranks_held_out_archs(linear_predictor):
    r = linear_predictor.report
    print("linear report:", {k: r[k] for k in ("model", "kendall_tau", "rmse", "n_train", "n_test")})
    assert r["n_train"] == 240 and r["n_test"] == 60
    assert r["kendall_tau"] > 0.7 and 0 < r["rmse"] < 0.05
    assert {c["model"] for c in r["candidates"]} == {"ridge", "krr", "mlp"}
    fresh = synthetic_pairs(200, seed=7)  # archs never seen by the fit
    from scipy.stats import kendalltau
    assert kendalltau([m for _, m in fresh], linear_predictor.predict([a for a, _ in fresh])).statistic > 0.7


def test_few_pairs_fit_only_ridge():
    # 12 pairs against 41 features: K-fold tau cannot choose a non-linear model honestly.
    pred = fit_accuracy_predictor(space=SPACE, pairs=synthetic_pairs(12, nonlinear=True), seed=0)
    assert {c["model"] for c in pred.report["candidates"]} == {"ridge"} and pred.kind == "ridge"
    assert len(set(np.round(pred.predict([SPACE.sample(random.Random(i)) for i in range(50)]), 9))) == 50


def test_predictor_handles_a_nonlinear_surface():
    pred = fit_accuracy_predictor(space=SPACE, pairs=synthetic_pairs(300, nonlinear=True, noise=0.005), seed=1)
    r = pred.report
    print("nonlinear report:", {k: r[k] for k in ("model", "kendall_tau", "rmse")})
    assert r["kendall_tau"] > 0.7


def test_round_trip_gives_identical_predictions(linear_predictor):
    archs = [SPACE.sample(random.Random(3)) for _ in range(50)]
    blob = linear_predictor.to_bytes()
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:  # plain arrays, no pickle
        assert "meta" in z.files
    loaded = AccuracyPredictor.from_bytes(blob)  # space rebuilt from the stored name and options
    assert loaded.space.options == SPACE.options and loaded.report == linear_predictor.report
    assert np.array_equal(loaded.predict(archs), linear_predictor.predict(archs))
    with pytest.raises(ValueError):
        AccuracyPredictor.from_bytes(blob, space=_Other(**SPACE_OPTIONS))


class _Other(type(SPACE)):
    name = "other_space"


@pytest.mark.parametrize("kind", ["ridge", "krr", "mlp"])
def test_every_model_round_trips_and_predicts_1000_archs(kind):
    # Its speed is a benchmark figure (bench/nas.py: search seconds per budget), not an assertion here.
    pairs = synthetic_pairs(120)
    x = np.array([SPACE.encode(a) for a, _ in pairs])
    y = np.array([m for _, m in pairs])
    hyper = {"ridge": {"alpha": 1.0}, "krr": {"alpha": 0.1, "gamma": 0.02},
             "mlp": {"members": 2, "hidden": 32, "steps": 50}}[kind]
    model = AccuracyPredictor.fit(space=SPACE, x=x, y=y, kind=kind, hyper=hyper)
    rng = random.Random(5)
    archs = [SPACE.sample(rng) for _ in range(1000)]
    out = model.predict(archs)
    assert out.shape == (1000,) and np.isfinite(out).all()
    loaded = AccuracyPredictor.from_bytes(model.to_bytes(), space=SPACE)
    assert np.array_equal(loaded.predict(archs), out)


def test_fit_needs_enough_pairs():
    with pytest.raises(ValueError, match="at least 10"):
        fit_accuracy_predictor(space=SPACE, pairs=synthetic_pairs(5))


def test_measure_archs_reports_progress():
    torch.manual_seed(0)
    net = SPACE.build_supernet(num_classes=10)
    loader = DataLoader(digits(64), batch_size=32)
    archs = [SPACE.sample(random.Random(i)) for i in range(3)]
    seen = []
    pairs = measure_archs(space=SPACE, supernet=net, archs=archs, calib_loader=loader, val_loader=loader,
                          device=torch.device("cpu"), progress=lambda f, m, d: seen.append(f), calib_batches=1)
    assert [a for a, _ in pairs] == archs and all(0 <= m <= 1 for _, m in pairs)
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])


@pytest.fixture(scope="module")
def flops():
    return FlopsTable(space=SPACE, num_classes=10)


def test_flops_table_adds_up_to_the_whole_network(flops):
    supernet = SPACE.build_supernet(num_classes=10)
    for arch in [SPACE.smallest(), SPACE.largest()] + [SPACE.sample(random.Random(i)) for i in range(3)]:
        size = SPACE.input_size(arch)
        assert flops([arch])[0] == pytest.approx(count_flops(supernet.extract(arch), (1, 3, size, size)) / 1e6)


@pytest.mark.parametrize("seed", [0, 1])
def test_front_aware_pairs_correct_the_predictor_where_the_search_goes(flops, seed):
    """Same number of measured archs (80): all random, or 56 random + 24 from fronts. On a
    saturating surface the random-only fit over-rates the front's archs; measured on the truth,
    the front-aware predictor's front is better and its errors there are smaller."""
    truth = lambda archs: synthetic_metric(archs, nonlinear=True)  # noqa: E731
    rng = random.Random(100 + seed)
    archs = [SPACE.sample(rng) for _ in range(80)]
    pairs = list(zip(archs, truth(archs), strict=True))
    asked = []

    def measure(*, archs):
        asked.append(len(archs))
        return list(zip(archs, truth(archs), strict=True))

    uniform = fit_accuracy_predictor(space=SPACE, pairs=pairs, seed=seed)
    all_pairs = add_front_pairs(space=SPACE, pairs=pairs[:56], measure=measure, cost=flops, n_front=24, seed=seed)
    aware = fit_accuracy_predictor(space=SPACE, pairs=all_pairs, seed=seed)
    assert asked == [12, 12] and len({hashable_arch(a) for a, _ in all_pairs}) == len(all_pairs) == 80
    ref = (0.4, 1.05 * flops([SPACE.largest()])[0])
    scores = {}
    for name, predictor in (("uniform", uniform), ("front_aware", aware)):
        front = nsga2(space=SPACE, accuracy=predictor.predict, latency=flops, seed=seed).front
        true = truth([p.arch for p in front])
        scores[name] = (hypervolume_2d(list(zip(true, [p.ms for p in front], strict=True)), ref),
                        float(np.mean(np.abs(np.array([p.metric for p in front]) - true))))
    print(scores)
    assert scores["front_aware"][0] > scores["uniform"][0] and scores["front_aware"][1] < scores["uniform"][1]


def test_predictor_pairs_are_picked_as_the_job_picks_them(flops):
    from autonn.predictors import predictor_pairs

    asked: dict[str, list[int]] = {"random": [], "front": []}

    def measurer(kind):
        def measure(*, archs):
            asked[kind].append(len(archs))
            return list(zip(archs, synthetic_metric(archs), strict=True))
        return measure

    first = [SPACE.pin_input_size(SPACE.largest(), 20)]
    pairs = predictor_pairs(space=SPACE, measure=measurer("random"), front_measure=measurer("front"), cost=flops,
                            n_archs=30, front_share=0.3, seed=0, first=first)
    # 21 random (after `first`, with the largest and smallest), then 9 from fronts in two rounds.
    assert asked["random"] == [21] and sum(asked["front"]) == 9 and len(asked["front"]) == 2
    keys = [hashable_arch(a) for a, _ in pairs]
    assert len(pairs) == len(set(keys)) == 30 and keys[0] == hashable_arch(first[0])
    assert {hashable_arch(SPACE.largest()), hashable_arch(SPACE.smallest())} <= set(keys[:21])
    # At least 10 random ones stay, however large the front share asked.
    asked = {"random": [], "front": []}
    predictor_pairs(space=SPACE, measure=measurer("random"), cost=flops, n_archs=12, front_share=0.9, seed=0)
    assert asked["random"] == [10, 1, 1]
