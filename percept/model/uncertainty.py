"""How sure a prediction is: the spread of its neighbours' scores and how like the survey its image is.

* The weighted standard deviation of the K neighbours' scores around the prediction, with the
  weights of the prediction itself.
* The best similarity: the largest cosine similarity of the query to any sample of the model.
* The domain threshold: the survey's own 5th percentile of nearest-neighbour similarity (each
  survey image's similarity to its nearest *other* survey image). A query whose best similarity
  lies below it is less like the survey than 95 % of the survey's images are like each other:
  it is flagged ``out_of_domain``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from percept.model.knn import KNNRegressor, Neighbours

#: The percentile of the survey's nearest-neighbour similarities below which a query is out of domain.
DOMAIN_PERCENTILE = 5.0


def weighted_sd(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row, sqrt(sum w (x - mean)^2 / sum w) with mean = sum w x / sum w (rows of ``(m, K)`` arrays)."""
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum(axis=1, keepdims=True)
    mean = (weights * scores).sum(axis=1, keepdims=True) / total
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


def survey_images(vectors: Mapping[str, np.ndarray],
                  images: Mapping[str, Sequence[str]] | None) -> tuple[np.ndarray, list[str]]:
    """One vector per survey image over all categories, and the image's key, in first-seen order.

    Images are the recorded sample names where every category records them; otherwise each
    distinct vector counts as one image (files without names, such as the published model).
    """
    named = images is not None and all(
        category in images and len(images[category]) == len(vectors[category]) for category in vectors)
    seen: dict[str, int] = {}
    rows: list[np.ndarray] = []
    for category, block in vectors.items():
        block = np.ascontiguousarray(block, dtype=np.float64)
        for i, row in enumerate(block):
            key = images[category][i] if named else hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest()
            if key not in seen:
                seen[key] = len(rows)
                rows.append(row)
    dim = next(iter(vectors.values())).shape[1] if vectors else 0
    return (np.stack(rows) if rows else np.empty((0, dim))), list(seen)


def nearest_other_similarity(vectors: np.ndarray) -> np.ndarray:
    """Each row's largest cosine similarity to any other row (rows are unit vectors, one per image).

    An exact KNN search for two neighbours: one of them is the row itself unless another row
    is at least as similar, and then that one is the answer.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) < 2:
        return np.full(len(vectors), np.nan)
    found = KNNRegressor(2).fit(vectors, np.zeros(len(vectors))).kneighbors(vectors, 2)
    itself = found.index[:, 0] == np.arange(len(vectors))
    return np.where(itself, found.similarity[:, 1], found.similarity[:, 0])


def domain_threshold(vectors: Mapping[str, np.ndarray], images: Mapping[str, Sequence[str]] | None = None,
                     percentile: float = DOMAIN_PERCENTILE) -> float | None:
    """The survey's ``percentile`` of nearest-other-image similarity (None for fewer than two images)."""
    rows, _ = survey_images(vectors, images)
    if len(rows) < 2:
        return None
    return float(np.percentile(nearest_other_similarity(rows), percentile))
