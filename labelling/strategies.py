"""Active-learning selection: which unlabelled images a person should label next.

Pure numpy over arrays, shared by the `select` job and the benchmark (bench/al.py), so what is
measured is what runs. Uncertainty strategies rank by the model's doubt about each image;
k-center covers the embedding space; hybrid pre-filters the most uncertain and then spreads the
batch over them (no near-duplicate batches); cold start picks typical images of distinct clusters
before any model exists."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MEASURES = ("least_confidence", "margin", "entropy")
STRATEGIES = ("random", "least_confidence", "margin", "entropy", "kcenter", "hybrid", "cold_start")
NEEDS_MODEL = frozenset({"least_confidence", "margin", "entropy", "hybrid"})
NEEDS_EMBEDDINGS = frozenset({"kcenter", "hybrid", "cold_start"})
# The strategy with a model that needed the fewest labels in bench/results/al.json.
DEFAULT_STRATEGY = "hybrid"
# Without a model: typical images of distinct clusters first, then coverage (k-center).
COLD_START_STRATEGY = "cold_start"


@dataclass(frozen=True)
class Selection:
    indices: list[int]  # into the pool, best first, no repeats
    scores: list[float | None]


def uncertainty(probs: np.ndarray, measure: str) -> np.ndarray:
    """Higher = more doubt. probs: (n, classes), rows summing to 1."""
    p = np.sort(np.asarray(probs, dtype=np.float64), axis=1)[:, ::-1]
    if measure == "least_confidence":
        return 1.0 - p[:, 0]
    if measure == "margin":
        return 1.0 - (p[:, 0] - (p[:, 1] if p.shape[1] > 1 else 0.0))
    if measure == "entropy":
        ent = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
        return ent / np.log(max(2, p.shape[1]))
    raise ValueError(f"unknown uncertainty measure {measure!r}; use one of {', '.join(MEASURES)}")


def detection_uncertainty(box_scores: list[np.ndarray], backgrounds: list[float], *, measure: str,
                          aggregate: str) -> np.ndarray:
    """Per image, from its kept boxes' per-class scores (k, nc): each box becomes a distribution
    over the classes plus 'no object' (1 - its best score), the measure applies per box, and the
    boxes are aggregated by mean or max. An image without boxes is judged on its single best
    anchor: object (1 - background) against no object."""
    out = np.zeros(len(box_scores))
    for i, (scores, background) in enumerate(zip(box_scores, backgrounds, strict=True)):
        if len(scores):
            q = np.concatenate([scores, 1.0 - scores.max(axis=1, keepdims=True)], axis=1)
        else:
            q = np.array([[1.0 - background, background]])
        per_box = uncertainty(q / q.sum(axis=1, keepdims=True), measure)
        out[i] = per_box.max() if aggregate == "max" else per_box.mean()
    return out


def _sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def min_sqdist(x: np.ndarray, others: np.ndarray, chunk: int = 4096) -> np.ndarray:
    out = np.full(len(x), np.inf)
    for i in range(0, len(others), chunk):
        out = np.minimum(out, _sqdist(x, others[i:i + chunk]).min(axis=1))
    return out


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, *, weights: np.ndarray | None = None,
           iters: int = 20) -> np.ndarray:
    """Cluster assignment of each row (k-means++ start, Lloyd steps, weighted if asked)."""
    n = len(x)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64) + 1e-12
    centers = [x[rng.choice(n, p=w / w.sum())]]
    d = _sqdist(x, centers[0][None])[:, 0]
    for _ in range(1, k):
        p = d * w
        idx = rng.choice(n, p=p / p.sum()) if p.sum() > 0 else int(rng.integers(n))
        centers.append(x[idx])
        d = np.minimum(d, _sqdist(x, x[idx][None])[:, 0])
    c = np.stack(centers)
    assign = np.zeros(n, dtype=np.int64)
    for step in range(iters):
        new = np.concatenate([_sqdist(x[i:i + 4096], c).argmin(axis=1) for i in range(0, n, 4096)])
        if step > 0 and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = assign == j
            if members.any():
                c[j] = np.average(x[members], axis=0, weights=w[members])
    return assign


def kcenter(pool: np.ndarray, labelled: np.ndarray | None, k: int) -> Selection:
    """Greedy k-center: each pick is the pool point farthest from everything labelled or picked."""
    if labelled is not None and len(labelled):
        mind = min_sqdist(pool, labelled)
        chosen: list[int] = []
    else:  # nothing labelled: start from the most central point
        first = int(_sqdist(pool, pool.mean(axis=0, keepdims=True))[:, 0].argmin())
        chosen, mind = [first], _sqdist(pool, pool[first][None])[:, 0]
    scores: list[float | None] = [None] * len(chosen)
    while len(chosen) < k:
        i = int(mind.argmax())
        chosen.append(i)
        scores.append(float(np.sqrt(mind[i])))
        mind = np.minimum(mind, _sqdist(pool, pool[i][None])[:, 0])
        mind[chosen] = -1.0
    return Selection(chosen, scores)


def typical_clusters(pool: np.ndarray, labelled: np.ndarray | None, k: int, rng: np.random.Generator) -> Selection:
    """Cold start (TypiClust-style): cluster everything into (labelled + k) clusters, and from the
    largest clusters holding no labelled image take the most typical member (smallest mean
    distance to its nearest neighbours in the cluster). Typical images teach more than outliers
    when there are few labels; distinct clusters keep the batch diverse."""
    m = 0 if labelled is None else len(labelled)
    x = pool if m == 0 else np.concatenate([pool, labelled])
    n_clusters = min(len(x), m + k)
    assign = kmeans(x, n_clusters, rng)
    pool_assign, lab_assign = assign[:len(pool)], assign[len(pool):]
    taken = set(lab_assign.tolist())
    sizes = np.bincount(pool_assign, minlength=n_clusters)
    order = sorted((c for c in range(n_clusters) if sizes[c]), key=lambda c: (c in taken, -sizes[c], c))
    chosen, scores = [], []
    for c in order[:k]:
        members = np.flatnonzero(pool_assign == c)
        if len(members) > 2000:
            members = rng.choice(members, 2000, replace=False)
        knn = min(20, len(members) - 1)
        if knn == 0:
            best, typicality = int(members[0]), 0.0
        else:
            d = np.sqrt(_sqdist(pool[members], pool[members]))
            mean_nn = np.sort(d, axis=1)[:, 1:knn + 1].mean(axis=1)
            j = int(mean_nn.argmin())
            best, typicality = int(members[j]), float(1.0 / (mean_nn[j] + 1e-9))
        chosen.append(best)
        scores.append(typicality)
    if len(chosen) < k:  # fewer non-empty clusters than wanted: cover the rest
        rest = kcenter(pool, pool[chosen] if m == 0 else np.concatenate([labelled, pool[chosen]]), k)
        chosen += [i for i in rest.indices if i not in chosen][:k - len(chosen)]
        scores += [None] * (k - len(scores))
    return Selection(chosen, scores)


def hybrid(unc: np.ndarray, pool: np.ndarray, k: int, rng: np.random.Generator, *, prefilter: int) -> Selection:
    """The `prefilter * k` most uncertain, clustered into k groups (k-means weighted by
    uncertainty); from each group its most uncertain member."""
    m = min(len(unc), max(k, prefilter * k))
    cand = np.argsort(-unc, kind="stable")[:m]
    if m == k:
        return Selection([int(i) for i in cand], [float(unc[i]) for i in cand])
    assign = kmeans(pool[cand], k, rng, weights=unc[cand])
    picks = []
    for c in range(k):
        members = cand[assign == c]
        if len(members):
            picks.append(int(members[np.argmax(unc[members])]))
    leftovers = [int(i) for i in cand if int(i) not in set(picks)]
    picks += leftovers[:k - len(picks)]
    picks.sort(key=lambda i: -unc[i])
    return Selection(picks, [float(unc[i]) for i in picks])


def select(strategy: str, *, batch_size: int, uncertainty: np.ndarray | None = None,
           embeddings: np.ndarray | None = None, labelled_embeddings: np.ndarray | None = None,
           seed: int = 0, prefilter: int = 10, pool_size: int | None = None) -> Selection:
    """Pick up to `batch_size` distinct pool indices, best first. The pool's size comes from the
    arrays given, or `pool_size` (random needs no arrays)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    n = len(uncertainty) if uncertainty is not None else len(embeddings) if embeddings is not None else pool_size or 0
    k = min(batch_size, n)
    rng = np.random.default_rng(seed)
    if k <= 0:
        return Selection([], [])
    if strategy in NEEDS_MODEL and uncertainty is None:
        raise ValueError(f"strategy {strategy!r} needs model scores (uncertainty)")
    if strategy in NEEDS_EMBEDDINGS and embeddings is None:
        raise ValueError(f"strategy {strategy!r} needs embeddings")
    if strategy == "random":
        idx = rng.permutation(n)[:k]
        sel = Selection([int(i) for i in idx], [None] * k)
    elif strategy in MEASURES:
        # Random tie-breaking: equal doubt must not favour import order.
        order = np.lexsort((rng.random(n), -uncertainty))[:k]
        sel = Selection([int(i) for i in order], [float(uncertainty[i]) for i in order])
    elif strategy == "kcenter":
        sel = kcenter(embeddings, labelled_embeddings, k)
    elif strategy == "hybrid":
        sel = hybrid(uncertainty, embeddings, k, rng, prefilter=prefilter)
    else:
        sel = typical_clusters(embeddings, labelled_embeddings, k, rng)
    assert len(set(sel.indices)) == len(sel.indices) <= batch_size, "selection repeated an image"
    return sel
