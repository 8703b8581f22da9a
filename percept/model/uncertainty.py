"""How sure a prediction is: the spread of its neighbours' scores and how like the survey its image is.

* The weighted standard deviation of the K neighbours' scores around the prediction, with the
  weights of the prediction itself.
* The best similarity: the largest cosine similarity of the query to any sample of the model.
* The out-of-domain flag: the best similarity below the survey's domain threshold
  (:mod:`percept.model.domain`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from percept.model.knn import Neighbours


def weighted_sd(scores: np.ndarray, weights: np.ndarray, weighted_sums: np.ndarray | None = None) -> np.ndarray:
    """Per row, sqrt(sum w (x - mean)^2 / sum w) with mean = sum w x / sum w (rows of ``(m, K)`` arrays);
    ``weighted_sums``: each row's sum w x where the caller has it (the same bits)."""
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum(axis=1, keepdims=True)
    if weighted_sums is None:
        weighted_sums = (weights * scores).sum(axis=1)
    mean = weighted_sums[:, None] / total
    variance = (weights * (scores - mean) ** 2).sum(axis=1) / total[:, 0]
    return np.sqrt(np.maximum(variance, 0.0))


def best_similarity(found: Sequence[Neighbours], counts: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Each query's largest similarity over several neighbour sets (one per category), NaN if none.

    Neighbours are sorted most similar first, so each set's first column is its best. ``counts``
    (per set, the number of valid leading columns of each row) marks rows whose set is short or empty.
    """
    best = None
    for number, hits in enumerate(found):
        first = np.full(len(hits.similarity), -np.inf)
        if hits.similarity.shape[1]:
            first = hits.similarity[:, 0].copy()
        if counts is not None:
            first[counts[number] == 0] = -np.inf
        best = first if best is None else np.maximum(best, first)
    if best is None:
        raise ValueError("best_similarity needs at least one neighbour set")
    return np.where(np.isneginf(best), np.nan, best)


def is_out_of_domain(similarity: np.ndarray, threshold: float | None) -> np.ndarray:
    """True where ``similarity`` lies below ``threshold`` (never for NaN similarity or an unknown threshold)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    if threshold is None or np.isnan(threshold):
        return np.zeros(similarity.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        return similarity < threshold
