"""The survey's domain: how like the survey a query is, measured over distinct survey images.

A survey can hold one picture twice (under two names, or rated in several categories) and the
crops of one panorama, which are near copies of each other. Both would make the survey look
denser than it is: an image's nearest *other* image would be its own copy. So the survey is first
reduced to distinct images: identical vectors are one, and vectors whose names are crops of one
panorama (``<id>_x<n>.<ext>``) form one group. Each group's nearest-other similarity is the
largest cosine similarity of any of its vectors to a vector of another group.

* The domain threshold is the 5th percentile of those similarities: a query whose best similarity
  to the survey lies below it is less like the survey than 95 % of the survey's images are like
  each other (``out_of_domain``).
* The dissimilarity index of a query is its distance to the nearest survey vector divided by the
  survey's mean nearest-other distance (the "area of applicability" index of Meyer & Pebesma
  2021), with the chord distance ``sqrt(2 - 2 s)`` of unit vectors at similarity ``s``: about 1
  for a query as far from the survey as survey images are from each other, larger further out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from percept.data.locations import panorama_id
from percept.model.knn import KNNRegressor, l2_normalise

#: The percentile of the survey's nearest-other similarities below which a query is out of domain.
DOMAIN_PERCENTILE = 5.0


@dataclass(frozen=True)
class SurveyDomain:
    """The survey's domain threshold (a similarity) and mean nearest-other chord distance."""

    threshold: float
    mean_distance: float
    groups: int  # distinct images (groups) it was measured over


@dataclass(frozen=True)
class DistinctImages:
    """The survey's distinct unit vectors and the group (distinct image) of each."""

    vectors: np.ndarray  # (distinct vectors, dim)
    group: np.ndarray  # (distinct vectors,) group number 0..groups-1

    @property
    def groups(self) -> int:
        return int(self.group.max()) + 1 if len(self.group) else 0


def chord_distance(similarity: ArrayLike) -> np.ndarray:
    """The distance between unit vectors at cosine ``similarity``: ``sqrt(2 - 2 s)`` (NaN stays NaN)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    return np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0))


def dissimilarity(best_similarity: ArrayLike, mean_distance: float | None) -> np.ndarray:
    """Distance to the nearest survey vector over the survey's mean nearest-other distance (NaN if unknown)."""
    best_similarity = np.asarray(best_similarity, dtype=np.float64)
    if mean_distance is None or not np.isfinite(mean_distance) or mean_distance <= 0:
        return np.full(best_similarity.shape, np.nan)
    return chord_distance(best_similarity) / mean_distance


def distinct_images(vectors: Mapping[str, np.ndarray],
                    images: Mapping[str, Sequence[str]] | None = None) -> DistinctImages:
    """Distinct unit vectors over all categories, grouped by identical content and by panorama.

    ``images`` names each sample's survey image per category (a category without names, or with
    the wrong number, groups by content only).
    """
    key_of: dict[bytes, int] = {}
    rows: list[np.ndarray] = []
    parent: list[int] = []
    panorama_of: dict[str, int] = {}

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for category, block in vectors.items():
        block = np.ascontiguousarray(block, dtype=np.float64)
        names = (images or {}).get(category)
        if names is not None and len(names) != len(block):
            names = None  # the wrong number of names: grouped by content only
        for i, row in enumerate(block):
            digest = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
            node = key_of.get(digest)
            if node is None:
                node = key_of[digest] = len(rows)
                rows.append(row)
                parent.append(node)
            if names is not None:
                other = panorama_of.setdefault(panorama_id(names[i]), node)
                a, b = root(node), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    dim = next(iter(vectors.values())).shape[1] if vectors else 0
    if not rows:
        return DistinctImages(np.empty((0, dim)), np.empty(0, dtype=np.int64))
    roots = np.array([root(node) for node in range(len(rows))], dtype=np.int64)
    group = np.unique(roots, return_inverse=True)[1].ravel()
    return DistinctImages(l2_normalise(np.stack(rows)), group)


def nearest_other_group(distinct: DistinctImages) -> np.ndarray:
    """Each group's largest similarity from any of its vectors to a vector of another group (NaN for one group)."""
    n, groups = len(distinct.group), distinct.groups
    if groups < 2:
        return np.full(groups, np.nan)
    k = min(n, int(np.bincount(distinct.group).max()) + 1)  # more than any group holds: one is another's
    found = KNNRegressor(k).fit(distinct.vectors, np.zeros(n)).kneighbors(distinct.vectors, k)
    other = distinct.group[found.index] != distinct.group[:, None]
    first = np.argmax(other, axis=1)
    best_of_row = found.similarity[np.arange(n), first]
    best = np.full(groups, -np.inf)
    np.maximum.at(best, distinct.group, best_of_row)
    return best


def survey_domain(vectors: Mapping[str, np.ndarray], images: Mapping[str, Sequence[str]] | None = None,
                  percentile: float = DOMAIN_PERCENTILE) -> SurveyDomain | None:
    """The survey's domain over its distinct images (None for fewer than two)."""
    distinct = distinct_images(vectors, images)
    if distinct.groups < 2:
        return None
    nearest = nearest_other_group(distinct)
    return SurveyDomain(float(np.percentile(nearest, percentile)), float(np.mean(chord_distance(nearest))),
                        distinct.groups)
