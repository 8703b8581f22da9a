"""How much each survey image weighed in a score: the model's neighbour weights, and a map point's
inverse-distance weights."""

from __future__ import annotations

import numpy as np

from percept.model.scoring import MultiScorer
from percept.model.weighting import neighbour_weights


def vector_weights(scorer: MultiScorer, query: np.ndarray) -> dict[str, dict[int, float]]:
    """Per category, ``{distinct survey vector: weight}`` in one unit query's score: the weights the model
    gives its K nearest samples (:func:`~percept.model.weighting.neighbour_weights`), summed over the
    samples that share a vector. Each category's weights sum to 1."""
    found = scorer.neighbours(np.asarray(query, dtype=np.float64).reshape(1, -1))
    shares = {}
    for category in scorer.categories:
        hits = found[category]
        weights = neighbour_weights(hits.similarity[:1], scorer.weighting)[0]
        vectors = scorer.sample_vectors(category)[hits.index[0]]
        totals: dict[int, float] = {}
        for vector, weight in zip(vectors.tolist(), weights.tolist()):
            totals[vector] = totals.get(vector, 0.0) + weight
        shares[category] = totals
    return shares


def distance_shares(weights: np.ndarray) -> np.ndarray:
    """Each point's share of a map point's inverse-distance weights (they sum to 1; empty stays empty)."""
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    return weights / total if total > 0 else weights
