"""Plain numpy brute force for the uncertainty tests: every similarity computed, every sample sorted."""

from __future__ import annotations

import numpy as np

from percept.model.weighting import neighbour_weights


def similarities(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Each row's similarity with ``query``, computed once per distinct row: equal rows get equal values
    (a matrix-vector product may round two equal rows differently)."""
    distinct, inverse = np.unique(vectors, axis=0, return_inverse=True)
    return (distinct @ query)[inverse.ravel()]


def nearest(vectors: np.ndarray, query: np.ndarray, k: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` most similar rows (ties: earlier row first), skipping ``excluded`` rows."""
    sims = similarities(vectors, query)
    order = np.lexsort((np.arange(len(sims)), -sims))
    if excluded is not None:
        order = order[~excluded[order]]
    return order[:k]


def estimate(vectors: np.ndarray, scores: np.ndarray, query: np.ndarray, k: int, weighting: str,
             excluded: np.ndarray | None = None) -> tuple[float, float, float]:
    """(weighted mean, weighted sd, best similarity) over the K nearest samples of one category."""
    chosen = nearest(vectors, query, k, excluded)
    if not len(chosen):
        return np.nan, np.nan, np.nan
    sims = similarities(vectors, query)[chosen]
    weights = neighbour_weights(sims[None, :], weighting)[0]
    values = scores[chosen]
    mean = float(np.sum(weights * values) / np.sum(weights))
    sd = float(np.sqrt(np.sum(weights * (values - mean) ** 2) / np.sum(weights)))
    return mean, sd, float(sims.max())


def nearest_other(vectors: np.ndarray, image_of: np.ndarray) -> np.ndarray:
    """Each row's largest similarity to a row of another image."""
    sims = vectors @ vectors.T
    sims[image_of[:, None] == image_of[None, :]] = -np.inf
    return sims.max(axis=1)
