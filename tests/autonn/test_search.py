"""Search on fixed synthetic predictors, so every outcome is deterministic."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest

from autonn.pareto import hypervolume_points, near_front, non_dominated, spread_points
from autonn.search import (
    BudgetedResult,
    BudgetUnreachable,
    MeasuredRound,
    ParetoPoint,
    PinnedSpace,
    _better,
    _timed,
    evolve,
    fastest_arch,
    hypervolume_2d,
    nsga2,
    pareto_front,
    random_search,
    search_under_budget,
    shortlist,
)
from autonn.spaces.base import get_search_space

SPACE = get_search_space("resnet_cls", resolutions=(24, 28, 32), base_widths=(16, 32, 64, 128), stem_width=16,
                         stem_stride=1)


def _unit(text: str) -> float:
    return zlib.crc32(text.encode()) / 2**32


# A fixed per-block table: cost grows with the block's input size, times a per-key factor.
BLOCK_MS = {s.key: 0.005 + math.prod(s.input_shape) / 2e5 * (0.5 + _unit(s.key)) for s in SPACE.all_blocks()}
WEIGHTS = np.random.default_rng(7).uniform(0.2, 1.0, len(SPACE.encode(SPACE.largest())))


def latency(archs):
    return np.array([sum(BLOCK_MS[b.key] for b in SPACE.blocks(a)) for a in archs])


def accuracy(archs):
    """Monotone in encode(arch), plus a small deterministic per-arch wobble."""
    x = np.array([SPACE.encode(a) for a in archs])
    wobble = np.array([_unit(SPACE.arch_key(a)) - 0.5 for a in archs])
    return 0.4 + 0.5 * (x @ WEIGHTS) / WEIGHTS.sum() + 0.003 * wobble


FASTEST = float(latency([SPACE.smallest()])[0])
SLOWEST = float(latency([SPACE.largest()])[0])
SMALL = dict(population=40, generations=25)


def test_evolve_respects_budget_and_improves():
    budget = FASTEST + 0.4 * (SLOWEST - FASTEST)
    res = evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=budget, seed=0, **SMALL)
    assert res.predicted_ms <= budget
    assert float(latency([res.arch])[0]) == pytest.approx(res.predicted_ms)
    assert float(accuracy([res.arch])[0]) == pytest.approx(res.predicted_metric)
    assert res.history == sorted(res.history)  # the parents survive, so the best never drops
    assert res.generations == SMALL["generations"] and res.queries > SMALL["population"]


def test_more_budget_never_worse():
    budgets = [FASTEST + f * (SLOWEST - FASTEST) for f in (0.1, 0.3, 0.6, 1.0)]
    metrics = [evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=b, seed=0, **SMALL).predicted_metric
               for b in budgets]
    print("budget -> metric:", [(round(b, 3), round(m, 4)) for b, m in zip(budgets, metrics, strict=True)])
    assert metrics == sorted(metrics)


def test_tight_budget_seeds_from_the_fastest():
    # Random samples almost never fit 5 % above the fastest; the search must still fill up.
    budget = FASTEST * 1.05
    res = evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=budget, seed=0, **SMALL)
    assert res.predicted_ms <= budget


def test_impossible_budget_names_the_fastest():
    arch, fastest = fastest_arch(space=SPACE, latency=latency, seed=0)
    assert fastest <= FASTEST and float(latency([arch])[0]) == pytest.approx(fastest)
    with pytest.raises(BudgetUnreachable) as err:
        evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=fastest / 2, device_name="pi5", **SMALL)
    print(err.value)
    assert err.value.fastest_ms == pytest.approx(fastest)
    assert f"{math.ceil(fastest * 100) / 100:.2f} ms" in str(err.value) and "pi5" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_measure_and_retry_never_returns_over_budget():
    budget = FASTEST + 0.4 * (SLOWEST - FASTEST)
    calls = []

    def measure(arch):  # the device is 20 % slower than the table says
        calls.append(arch)
        return 1.2 * float(latency([arch])[0])

    res = search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=measure, budget_ms=budget,
                              device_name="slowboard", seed=0, **SMALL)
    print([(round(r.predicted_ms, 3), round(r.scale, 3), round(r.measured_ms, 3)) for r in res.rounds])
    assert res.measured_ms <= budget and not res.fallback
    assert len(res.rounds) > 1 and res.rounds[0].measured_ms > budget
    assert res.latency_scale == pytest.approx(1.2)
    assert [r.scale for r in res.rounds] == sorted(r.scale for r in res.rounds)
    assert len(calls) == sum(len(r.timings_ms) for r in res.rounds)
    assert all(r.measured_ms == pytest.approx(np.median(r.timings_ms)) for r in res.rounds)


def test_a_faster_device_than_the_table_gets_its_slack_used():
    budget = FASTEST + 0.4 * (SLOWEST - FASTEST)

    def measure(arch):  # the table was built in a slow spell: the device is 30 % faster
        return 0.7 * float(latency([arch])[0])

    res = search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=measure, budget_ms=budget,
                              device_name="fastboard", seed=0, **SMALL)
    print([(round(r.predicted_ms, 3), round(r.scale, 3), round(r.measured_ms, 3)) for r in res.rounds])
    first = res.rounds[0]
    assert len(res.rounds) == 2 and res.rounds[1].scale == pytest.approx(0.7)
    assert res.measured_ms <= budget and res.latency_scale == pytest.approx(0.7)
    assert res.predicted_ms > first.predicted_ms and res.predicted_metric > first.predicted_metric
    # Within `slack` of the table, nothing is searched again.
    near = search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=budget, device_name="x",
                               measure=lambda a: 0.95 * float(latency([a])[0]), seed=0, **SMALL)
    assert len(near.rounds) == 1


def test_measure_and_retry_gives_up_with_the_measured_fastest():
    _, fastest = fastest_arch(space=SPACE, latency=latency, seed=0)
    budget = fastest * 1.1  # fits the table, but the device is 20 % slower everywhere
    with pytest.raises(BudgetUnreachable) as err:
        search_under_budget(space=SPACE, accuracy=accuracy, latency=lambda a: latency(a),
                            measure=lambda a: 1.2 * float(latency([a])[0]), budget_ms=budget,
                            device_name="slowboard", seed=0, **SMALL)
    print(err.value)
    assert err.value.measured and err.value.fastest_ms == pytest.approx(1.2 * fastest)
    assert "measured takes" in str(err.value)


def test_when_every_pick_reads_over_one_last_round_aims_under_the_budget():
    budget = FASTEST + 0.4 * (SLOWEST - FASTEST)
    on_edge: list[str] = []

    def edge(arch):
        """The first four networks measured read 3 % over the budget, every time (each sat on the
        budget's edge, where the table under-rated it); the rest read as the table says."""
        key = SPACE.arch_key(arch)
        if key not in on_edge and len(on_edge) < 4:
            on_edge.append(key)
        if key in on_edge:
            return 1.03 * budget
        return float(latency([arch])[0])

    res = search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=edge, budget_ms=budget,
                              device_name="host", seed=0, **SMALL)
    print([(round(r.predicted_ms, 3), round(r.scale, 3), round(r.measured_ms, 3)) for r in res.rounds])
    assert [r.measured_ms > budget for r in res.rounds] == [True] * 4 + [False]
    worst = max(r.measured_ms / r.predicted_ms for r in res.rounds[:4])
    assert res.latency_scale == pytest.approx(worst) and res.measured_ms <= 0.95 * budget / worst
    # Not the fastest network: the best the last round found under 95 % of the budget.
    fastest, fastest_ms = fastest_arch(space=SPACE, latency=latency, seed=0)
    assert not res.fallback and res.measured_ms > 0.9 * 0.95 * budget / worst > 2 * fastest_ms
    assert res.aimed_ms == pytest.approx(0.95 * budget)
    assert res.predicted_metric > float(accuracy([fastest])[0])


def test_a_reading_near_the_budget_is_taken_again_and_the_median_decides():
    budget = FASTEST + 0.4 * (SLOWEST - FASTEST)
    readings: dict[str, int] = {}

    def drifting(arch):
        """Each network's first reading is a spike 3 % over the budget; the later ones are 2 % under."""
        key = SPACE.arch_key(arch)
        readings[key] = readings.get(key, 0) + 1
        return budget * (1.03 if readings[key] == 1 else 0.98)

    res = search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=drifting, budget_ms=budget,
                              device_name="host", seed=0, **SMALL)
    assert len(res.rounds) == 1 and res.rounds[0].timings_ms == pytest.approx([1.03 * budget, 0.98 * budget] + [0.98 * budget])
    assert res.measured_ms == pytest.approx(0.98 * budget) and not res.fallback
    # One reading per network: every pick is discarded on its spike, the fastest one too.
    readings.clear()
    with pytest.raises(BudgetUnreachable):
        search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=drifting, budget_ms=budget,
                            device_name="host", seed=0, repeats=0, **SMALL)


def test_only_readings_near_the_budget_are_repeated():
    for reading, n in ((1.2, 1), (1.04, 3), (0.96, 3), (0.9, 1)):
        calls = []
        times = _timed(lambda a, calls=calls, reading=reading: calls.append(a) or reading, SPACE.smallest(), budget_ms=1.0, near=0.05, repeats=2)
        assert times == [reading] * n and len(calls) == n


def over_rated_low_res(archs):
    """A predictor that over-rates the lowest input size, as an additive fit does when capacity
    helps less at low resolution: `accuracy` with a bonus at 24 px."""
    return accuracy(archs) + np.array([0.3 * (a["resolution"] == 24) for a in archs])


def true_metric(archs):
    """What the supernet measures: `accuracy`, with low resolution costing more than predicted."""
    return accuracy(archs) - np.array([0.05 * (a["resolution"] == 24) for a in archs])


def test_pinned_space_holds_the_input_size():
    import random

    pinned, rng = PinnedSpace(SPACE, 28), random.Random(0)
    made = [pinned.sample(rng), pinned.largest(), pinned.smallest(), pinned.mutate(SPACE.largest(), rng, 1.0),
            pinned.crossover(SPACE.smallest(), SPACE.largest(), rng)]
    assert {SPACE.input_size(a) for a in made} == {28}
    assert pinned.encode(made[0]) == SPACE.encode(made[0])  # everything else is the space's own


def test_shortlist_spans_input_sizes_within_budget():
    budget = FASTEST + 0.5 * (SLOWEST - FASTEST)
    cands = shortlist(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=budget, per_size=2, seed=0, **SMALL)
    assert sorted({SPACE.input_size(c.arch) for c in cands}) == [24, 28, 32]
    assert all(c.predicted_ms <= budget for c in cands)
    assert [sum(SPACE.input_size(c.arch) == s for c in cands[:6]) for s in (24, 28, 32)] == [2, 2, 2]
    encoded = [tuple(SPACE.encode(c.arch)) for c in cands]
    assert len(set(encoded)) == len(cands)  # networks, not configs that differ in skipped blocks
    # The winner of the search over every size is on the list, once: appended when it is new.
    open_pick = evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=budget, seed=0, **SMALL).arch
    assert tuple(SPACE.encode(open_pick)) in encoded and len(cands) in (6, 7)
    assert len(cands) == 6 or cands[6].arch == open_pick
    # Where the pinned searches settle elsewhere, it is the extra entry.
    tight = FASTEST + 0.3 * (SLOWEST - FASTEST)
    one = shortlist(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=tight, per_size=1, seed=0, **SMALL)
    open_pick = evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=tight, seed=0, **SMALL).arch
    assert len(one) == 4 and one[3].arch == open_pick
    assert tuple(SPACE.encode(open_pick)) not in [tuple(SPACE.encode(c.arch)) for c in one[:3]]


def test_rerank_keeps_the_best_measured_not_the_best_predicted():
    budget = FASTEST + 0.5 * (SLOWEST - FASTEST)
    measure = lambda a: float(latency([a])[0])
    plain = search_under_budget(space=SPACE, accuracy=over_rated_low_res, latency=latency, measure=measure,
                                budget_ms=budget, device_name="host", seed=0, **SMALL)
    checked = []

    def rerank(archs):
        checked.append(len(archs))
        return true_metric(archs)

    fixed = search_under_budget(space=SPACE, accuracy=over_rated_low_res, latency=latency, measure=measure,
                                budget_ms=budget, device_name="host", seed=0, rerank=rerank, per_size=2, **SMALL)
    assert plain.arch["resolution"] == 24 and plain.measured_metric is None
    assert fixed.measured_ms <= budget and fixed.arch["resolution"] != 24
    assert fixed.measured_metric == max(c.measured_metric for c in fixed.candidates)
    assert fixed.measured_metric > float(true_metric([plain.arch])[0])
    assert checked == [len(fixed.candidates)] and len(fixed.candidates) in (6, 7)
    assert fixed.rounds[-1].measured_metric == fixed.measured_metric


def test_refine_fine_tunes_the_best_measured_of_each_input_size():
    budget = FASTEST + 0.5 * (SLOWEST - FASTEST)
    measure = lambda a: float(latency([a])[0])
    refined = []

    def refine(archs):
        """Fine-tuning favours 24 px, which the supernet under-rates (`true_metric`)."""
        refined.append(list(archs))
        return [0.9 if a["resolution"] == 24 else 0.5 for a in archs]

    res = search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=measure, budget_ms=budget,
                              device_name="host", seed=0, rerank=true_metric, per_size=2, refine=refine, **SMALL)
    # One call, one finalist per input size: the best of that size on the supernet.
    assert len(refined) == 1 and sorted(SPACE.input_size(a) for a in refined[0]) == [24, 28, 32]
    for arch in refined[0]:
        same = [c for c in res.candidates if SPACE.input_size(c.arch) == SPACE.input_size(arch)]
        assert SPACE.arch_key(arch) == SPACE.arch_key(max(same, key=lambda c: c.measured_metric).arch)
    assert res.arch["resolution"] == 24 and res.refined_metric == 0.9 and res.measured_ms <= budget
    assert res.rounds[-1].refined_metric == 0.9
    assert sum(c.refined_metric is not None for c in res.candidates) == 3
    # Without refine the supernet's best wins, which is not at 24 px.
    plain = search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=measure, budget_ms=budget,
                                device_name="host", seed=0, rerank=true_metric, per_size=2, **SMALL)
    assert plain.arch["resolution"] != 24 and plain.refined_metric is None
    # One input size leaves nothing to decide: no fine-tuning.
    one_size = get_search_space("resnet_cls", resolutions=(32,), base_widths=(16, 32, 64, 128), stem_width=16,
                                stem_stride=1)
    one = search_under_budget(space=one_size, accuracy=lambda a: np.full(len(a), 0.5),
                              latency=lambda a: np.full(len(a), 1.0), measure=None, budget_ms=2.0, device_name="host",
                              seed=0, rerank=lambda a: [0.5] * len(a), per_size=2, refine=refine, **SMALL)
    assert len(refined) == 1 and one.refined_metric is None


def test_a_refined_pick_over_budget_gives_way_to_a_fine_tuned_finalist_that_fits():
    budget = FASTEST + 0.5 * (SLOWEST - FASTEST)
    measured = []

    def measure(a):
        """The device runs every 24 px network at twice the budget: the table is wrong there."""
        measured.append(a)
        return 2 * budget if a["resolution"] == 24 else float(latency([a])[0])

    def refine(archs):
        return [0.9 if a["resolution"] == 24 else 0.5 + 0.01 * (a["resolution"] == 32) for a in archs]

    res = search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=measure, budget_ms=budget,
                              device_name="host", seed=0, rerank=true_metric, per_size=2, refine=refine, **SMALL)
    # The 24 px pick missed; the best other finalist of that round (32 px) was measured next and kept.
    first, second = res.rounds[:2]
    assert first.arch["resolution"] == 24 and first.measured_ms > budget and first.refined_metric == 0.9
    assert second.arch["resolution"] == 32 and second.measured_ms <= budget and second.scale == first.scale
    assert res.measured_ms <= budget and res.refined_metric == 0.51 and res.arch["resolution"] != 24
    assert [SPACE.arch_key(a) for a in measured] == [SPACE.arch_key(r.arch) for r in res.rounds]


def test_results_that_fit_are_compared_fine_tuned():
    """A round with one input size on its shortlist fine-tunes nothing; its supernet val metric
    must not be set against another round's fine-tuned one."""
    arch = SPACE.smallest()
    own = MeasuredRound(arch, 0.4, 1.0, 1.0, 1.0, 0.3)
    later = BudgetedResult(arch, 0.4, 1.0, 1.0, 2.0, "host", 1.0, [own], measured_metric=0.3, own_round=own)
    kept = BudgetedResult(SPACE.largest(), 0.5, 1.0, 1.0, 2.0, "host", 1.0, [], measured_metric=0.2,
                          refined_metric=0.5)
    assert _better(later, kept)  # on the supernet's word: 0.3 against 0.2
    assert not _better(later, kept, refine=lambda archs: [0.4] * len(archs))  # fine-tuned: 0.4 against 0.5
    assert later.refined_metric == 0.4 and later.rounds[0].refined_metric == 0.4


def test_without_a_device_the_latency_predictor_is_trusted():
    budget = FASTEST + 0.4 * (SLOWEST - FASTEST)
    res = search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=None, budget_ms=budget,
                              device_name="pi5", seed=0, **SMALL)
    assert res.measured_ms is None and res.predicted_ms <= budget and len(res.rounds) == 1
    # Nothing fits on the table's word: refused with the predicted fastest, never the fastest handed back.
    _, fastest = fastest_arch(space=SPACE, latency=latency, seed=0)
    with pytest.raises(BudgetUnreachable) as err:
        search_under_budget(space=SPACE, accuracy=accuracy, latency=latency, measure=None, budget_ms=fastest / 2,
                            device_name="pi5", seed=0, **SMALL)
    assert not err.value.measured and err.value.fastest_ms == pytest.approx(fastest)


def test_pareto_front_is_spread_and_non_dominated():
    points = pareto_front(space=SPACE, accuracy=accuracy, latency=latency, n_points=10, population=50,
                          generations=30, seed=0)
    assert len(points) >= 10
    assert len({SPACE.arch_key(p.arch) for p in points}) == len(points)
    assert [p.ms for p in points] == sorted(p.ms for p in points)
    for a, b in itertools.permutations(points, 2):
        assert not (a.ms <= b.ms and a.metric >= b.metric and (a.ms < b.ms or a.metric > b.metric))
    span = points[-1].ms - points[0].ms
    assert span > 0.5 * (SLOWEST - FASTEST)


def test_a_short_run_keeps_evolving_until_the_front_is_full():
    short = nsga2(space=SPACE, accuracy=accuracy, latency=latency, population=10, generations=2, seed=0)
    assert len(short.front) < 12  # two generations of ten archs fall short of a 12-point front ...
    full = nsga2(space=SPACE, accuracy=accuracy, latency=latency, population=10, generations=2, seed=0, min_front=12)
    assert len(full.front) >= 12 and full.queries > short.queries  # ... so it ran on until it held 12
    points = pareto_front(space=SPACE, accuracy=accuracy, latency=latency, n_points=12, population=10,
                          generations=2, seed=0)
    assert len(points) == 12


def test_near_front_peels_whole_layers_and_thins_the_last():
    pts = [ParetoPoint({"i": i}, m, ms) for i, (m, ms) in enumerate(
        [(0.9, 1.0), (0.8, 0.5), (0.85, 1.2), (0.7, 0.6), (0.6, 0.7), (0.75, 1.5), (0.5, 2.0), (0.4, 0.4)])]
    first = {0, 1, 7}  # non-dominated: (0.4, 0.4), (0.8, 0.5), (0.9, 1.0)
    assert {p.arch["i"] for p in near_front(pts, 3)} == first
    four = {p.arch["i"] for p in near_front(pts, 4)}
    assert first < four and len(four) == 4  # plus one of the second layer: (0.7, 0.6), (0.85, 1.2)
    assert len(near_front(pts, 100)) == len(pts)


def test_a_reranked_front_is_drawn_from_the_measured_metric():
    # The "measured" metric: the predictor's, with a deterministic error of up to 0.05 per arch,
    # large against the front's steps, so the measured front differs from the predicted one.
    def measured(archs):
        calls.append(len(archs))
        return accuracy(archs) - 0.05 * np.array([_unit("m" + SPACE.arch_key(a)) for a in archs])

    calls: list[int] = []
    points = pareto_front(space=SPACE, accuracy=accuracy, latency=latency, n_points=10, population=40,
                          generations=20, seed=0, rerank=measured, candidates=40)
    assert calls == [40]  # one batch: the 40 candidates nearest the predicted front
    assert len(points) == 10 and [p.ms for p in points] == sorted(p.ms for p in points)
    for p in points:
        assert p.metric == pytest.approx(float(measured([p.arch])[0]))
        assert p.predicted_metric == pytest.approx(float(accuracy([p.arch])[0]))
    for a, b in itertools.permutations(points, 2):  # non-dominated on the measured metric
        assert not (a.ms <= b.ms and a.metric >= b.metric and (a.ms < b.ms or a.metric > b.metric))
    plain = pareto_front(space=SPACE, accuracy=accuracy, latency=latency, n_points=10, population=40,
                         generations=20, seed=0)
    assert all(p.predicted_metric is None for p in plain)
    assert {SPACE.arch_key(p.arch) for p in plain} != {SPACE.arch_key(p.arch) for p in points}


def test_evolution_beats_random_search_at_equal_queries():
    front = nsga2(space=SPACE, accuracy=accuracy, latency=latency, population=50, generations=30, seed=0)
    rand = random_search(space=SPACE, accuracy=accuracy, latency=latency, queries=front.queries, seed=0)
    ref = (0.4, SLOWEST * 1.01)
    hv_evo, hv_rand = hypervolume_2d(front.front, ref), hypervolume_2d(rand.front, ref)
    print(f"hypervolume at {front.queries} queries: NSGA-II {hv_evo:.4f}, random {hv_rand:.4f}")
    assert rand.queries == front.queries and hv_evo > hv_rand

    budget = FASTEST + 0.3 * (SLOWEST - FASTEST)
    evo = evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=budget, seed=0, **SMALL)
    base = random_search(space=SPACE, accuracy=accuracy, latency=latency, queries=evo.queries, seed=0,
                         budget_ms=budget)
    assert base.best is not None and evo.predicted_metric > base.best.metric


def test_hypervolume_2d():
    assert hypervolume_2d([(0.5, 1.0)], (0.0, 2.0)) == pytest.approx(0.5)
    # two points: a staircase, a dominated point and one outside the reference add nothing
    pts = [ParetoPoint({}, 0.5, 1.0), ParetoPoint({}, 0.8, 1.5), (0.4, 1.2), (0.9, 3.0)]
    assert hypervolume_2d(pts, (0.0, 2.0)) == pytest.approx(1.0 * 0.5 + 0.5 * 0.3)


def test_hypervolume_points_are_the_best_subset_with_both_ends():
    rng = np.random.default_rng(0)
    for trial in range(40):
        front = non_dominated(ParetoPoint({"i": i}, float(m), float(ms))
                              for i, (m, ms) in enumerate(rng.random((int(rng.integers(8, 40)), 2))))
        k = int(rng.integers(3, 7))
        if len(front) <= k:
            assert hypervolume_points(front, k) == front
            continue
        box = (front[0].metric, front[-1].ms)  # the front's own box: both ends add nothing to it
        got = hypervolume_points(front, k)
        assert len(got) == k and got[0] is front[0] and got[-1] is front[-1]
        assert [p.ms for p in got] == sorted(p.ms for p in got)
        best = max(hypervolume_2d([front[0], *(front[i] for i in inner), front[-1]], box)
                   for inner in itertools.combinations(range(1, len(front) - 1), k - 2))
        assert hypervolume_2d(got, box) == pytest.approx(best, abs=1e-12)


def test_hypervolume_points_keep_the_knee_that_even_latency_steps_skip():
    # A steep climb over the first tenth of the latency range, then a long flat tail: even steps
    # in latency put one point on the climb; the hypervolume choice puts most of them there.
    front = [ParetoPoint({"i": i}, min(ms, 0.1) * 5 + 0.001 * ms, ms)
             for i, ms in enumerate(np.linspace(0.01, 1, 100))]
    box = (front[0].metric, front[-1].ms)
    even, by_area = spread_points(front, 6), hypervolume_points(front, 6)
    assert sum(p.ms <= 0.1 for p in even) == 1
    assert sum(p.ms <= 0.1 for p in by_area) >= 3
    assert hypervolume_2d(by_area, box) > hypervolume_2d(even, box)


def test_fifty_thousand_queries_stay_under_the_budget():
    # How fast is a benchmark figure (bench/nas.py), not an assertion: the query cap is what is checked.
    budget = FASTEST + 0.5 * (SLOWEST - FASTEST)
    res = evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=budget, population=100,
                 generations=100_000, max_queries=50_000, patience=None, seed=0)
    print(f"evolve: {res.queries} queries, {res.generations} generations in {res.seconds:.1f} s "
          f"(best {res.predicted_metric:.4f} at {res.predicted_ms:.3f} ms)")
    assert res.queries >= 50_000 and res.predicted_ms <= budget


def test_evolve_stops_once_the_best_stops_rising():
    budget = FASTEST + 0.5 * (SLOWEST - FASTEST)
    quick = evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=budget, patience=30, seed=0)
    full = evolve(space=SPACE, accuracy=accuracy, latency=latency, budget_ms=budget, patience=None, seed=0)
    assert full.generations == 500 and quick.generations < 500
    assert quick.history[-1] == quick.history[-31] and quick.predicted_metric == max(quick.history)
    # The same run up to that point: it stopped on a plateau, not on a worse arch.
    assert quick.history == full.history[:quick.generations]
    assert quick.predicted_metric <= full.predicted_metric


def test_random_search_is_reproducible():
    a = random_search(space=SPACE, accuracy=accuracy, latency=latency, queries=200, seed=3)
    b = random_search(space=SPACE, accuracy=accuracy, latency=latency, queries=200, seed=3)
    assert a.queries == 200 and [p.arch for p in a.front] == [p.arch for p in b.front]
