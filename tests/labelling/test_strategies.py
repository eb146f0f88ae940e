"""The selection strategies on arrays whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from labelling import embeddings, strategies


def test_uncertainty_measures_rank_doubt():
    probs = np.array([[0.98, 0.01, 0.01], [0.5, 0.49, 0.01], [0.34, 0.33, 0.33], [0.6, 0.2, 0.2]])
    for measure in strategies.MEASURES:
        u = strategies.uncertainty(probs, measure)
        assert u.argmin() == 0 and u.shape == (4,)
    # Margin cares about the top two only; entropy about the whole spread.
    assert strategies.uncertainty(probs, "margin")[1] > strategies.uncertainty(probs, "margin")[3]
    assert strategies.uncertainty(probs, "entropy")[2] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="unknown uncertainty measure"):
        strategies.uncertainty(probs, "vibes")


def test_detection_uncertainty_mean_and_max():
    sure = np.array([[0.97, 0.01]])
    unsure = np.array([[0.5, 0.45]])
    scores = [np.concatenate([sure, unsure]), sure, np.zeros((0, 2))]
    mx = strategies.detection_uncertainty(scores, [0.0, 0.0, 0.98], measure="margin", aggregate="max")
    mean = strategies.detection_uncertainty(scores, [0.0, 0.0, 0.98], measure="margin", aggregate="mean")
    assert mx[0] > mean[0] > mx[1]  # one doubtful box dominates max, is diluted by mean
    assert mx[2] < mx[0]  # nothing there, and the model is sure of it


def _blobs(rng, centres, per, spread=0.05):  # noqa: ANN001, ANN202
    return np.concatenate([c + rng.normal(0, spread, (per, len(c))) for c in centres])


def test_hybrid_spreads_a_batch_that_uncertainty_alone_would_fill_with_near_duplicates():
    rng = np.random.default_rng(0)
    # 20 near-copies of one image, all very uncertain, and 5 other clusters a little less so.
    emb = np.concatenate([np.full((20, 8), 3.0) + rng.normal(0, 1e-3, (20, 8)),
                          _blobs(rng, [np.eye(8)[i] * 3 for i in range(5)], 8)])
    unc = np.concatenate([np.full(20, 0.95), rng.uniform(0.7, 0.9, 40)])
    margin = strategies.select("margin", batch_size=6, uncertainty=unc, embeddings=emb)
    hybrid = strategies.select("hybrid", batch_size=6, uncertainty=unc, embeddings=emb, prefilter=10)
    assert sum(i < 20 for i in margin.indices) == 6
    assert sum(i < 20 for i in hybrid.indices) == 1 and len(set(hybrid.indices)) == 6


def test_kcenter_covers_the_space_and_avoids_what_is_labelled():
    rng = np.random.default_rng(1)
    centres = [np.eye(4)[i] * 5 for i in range(4)]
    pool = _blobs(rng, centres, 10)
    picked = strategies.select("kcenter", batch_size=4, embeddings=pool).indices
    assert sorted(i // 10 for i in picked) == [0, 1, 2, 3]
    labelled = _blobs(rng, centres[:3], 2)
    picked = strategies.select("kcenter", batch_size=1, embeddings=pool, labelled_embeddings=labelled).indices
    assert picked[0] // 10 == 3


def test_cold_start_takes_a_typical_image_of_each_cluster():
    rng = np.random.default_rng(2)
    centres = [np.eye(6)[i] * 4 for i in range(3)]
    pool = np.concatenate([_blobs(rng, centres, 30), np.array([[9.0] * 6])])  # and one outlier
    sel = strategies.select("cold_start", batch_size=3, embeddings=pool, seed=0)
    assert sorted(i // 30 for i in sel.indices) == [0, 1, 2]  # not the outlier (index 90)
    for i in sel.indices:
        assert np.linalg.norm(pool[i] - centres[i // 30]) < 0.2  # near the middle of its cluster


@pytest.mark.parametrize("strategy", strategies.STRATEGIES)
@pytest.mark.parametrize("batch", [1, 9, 50])
def test_no_strategy_repeats_or_overfills(strategy, batch):
    rng = np.random.default_rng(batch)
    emb = rng.normal(size=(30, 5))
    unc = rng.uniform(size=30)
    unc[:10] = 0.5  # ties
    sel = strategies.select(strategy, batch_size=batch, uncertainty=unc, embeddings=emb,
                            labelled_embeddings=emb[:3], seed=batch)
    assert len(sel.indices) == min(batch, 30) == len(set(sel.indices)) == len(sel.scores)
    assert all(0 <= i < 30 for i in sel.indices)


def test_strategies_say_what_they_need():
    with pytest.raises(ValueError, match="needs model scores"):
        strategies.select("margin", batch_size=3, embeddings=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="unknown strategy"):
        strategies.select("telepathy", batch_size=3, pool_size=5)
    assert len(strategies.select("random", batch_size=3, pool_size=5).indices) == 3


def test_embeddings_are_unit_vectors_that_tell_images_apart():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    b = np.roll(a, 20, axis=1)
    ea, eb = embeddings.embed_array(a), embeddings.embed_array(b)
    assert ea.shape == (embeddings.DIM,) and np.linalg.norm(ea) == pytest.approx(1.0, abs=1e-5)
    near = embeddings.embed_array(np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8))
    assert np.linalg.norm(ea - near) < np.linalg.norm(ea - eb)
    assert np.allclose(embeddings.from_bytes(embeddings.to_bytes(ea)), ea, atol=1e-3)
