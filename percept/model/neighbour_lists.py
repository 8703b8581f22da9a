"""Neighbour lists shared by every cross-validation fold of one category.

The folds of every repeat partition the same samples, so the nearest samples of
each sample are searched once: for every distinct vector, its ``length``
nearest samples of the category, most similar first, ties by sample position
(the training order of every fold). The lists come from the exact search of
:mod:`percept.model.exact_search`, so each is an exact prefix of the full
order. A fold's neighbours of a test sample are the first K entries of its list
that lie in the fold's training part; rows whose list holds too few training
samples are searched directly with ``KNNRegressor``, so results equal a
per-fold ``KNNRegressor`` search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from percept.model.exact_search import search
from percept.model.knn import KNNRegressor, sample_space
from percept.model.unit_rows import Rows


def list_length(k_max: int, folds: float) -> int:
    """Samples kept per list for searches up to ``k_max`` neighbours.

    A share (folds - 1) / folds of a list lies in a fold's training part; the length
    keeps ``k_max`` of them but for five standard deviations (rows that fall short
    are searched directly, so this only trades time, never exactness).
    """
    share = (folds - 1) / folds
    length = k_max
    while length * share - 5 * math.sqrt(length * share * (1 - share)) < k_max:
        length += 1
    return length + 8


@dataclass(frozen=True)
class NeighbourLists:
    """Each distinct vector's nearest samples, most similar first."""

    vector_of: np.ndarray  # (samples,) distinct vector of each sample
    distinct: np.ndarray  # (distinct,) embedding row of each distinct vector
    samples: np.ndarray  # (distinct, length) sample positions
    similarity: np.ndarray  # (distinct, length) float64 similarities


@dataclass(frozen=True)
class FoldNeighbours:
    """The nearest training samples (positions in all samples) of each query, and rows searched directly."""

    index: np.ndarray  # (queries, K) sample positions
    similarity: np.ndarray  # (queries, K)
    searched: np.ndarray  # (queries,) True where the list was too short and KNNRegressor searched


def neighbour_lists(vectors: Rows, rows: np.ndarray, length: int) -> NeighbourLists:
    """Lists of the ``length`` nearest samples of every distinct row in ``rows`` (samples: ``vectors[rows]``)."""
    rows = np.asarray(rows, dtype=np.int64)
    distinct, vector_of = np.unique(rows, return_inverse=True)
    found = search(sample_space(vectors, rows), vectors, length, rows=distinct)[0]
    return NeighbourLists(vector_of.ravel(), distinct, found.index, found.similarity)


def fold_neighbours(lists: NeighbourLists, vectors: Rows, rows: np.ndarray, train: np.ndarray,
                    query_vectors: np.ndarray, k: int) -> FoldNeighbours:
    """The ``min(k, len(train))`` nearest training samples of each query distinct vector.

    ``train`` holds the training sample positions in ascending order;
    ``query_vectors`` indexes the distinct vectors of ``lists``.
    """
    k = min(int(k), len(train))
    is_train = np.zeros(len(lists.vector_of), dtype=bool)
    is_train[train] = True
    cand = lists.samples[query_vectors]
    keep = is_train[cand]
    rank = np.cumsum(keep, axis=1)
    searched = rank[:, -1] < k
    take = keep & (rank <= k) & ~searched[:, None]
    index = np.empty((len(cand), k), dtype=np.int64)
    sims = np.empty((len(cand), k), dtype=np.float64)
    index[~searched] = cand[take].reshape(-1, k)
    sims[~searched] = lists.similarity[query_vectors][take].reshape(-1, k)
    if searched.any():
        model = KNNRegressor(k).fit(vectors, np.zeros(len(train)), rows[train])
        found = model.kneighbors(vectors, k, rows=lists.distinct[query_vectors[searched]])
        index[searched], sims[searched] = train[found.index], found.similarity
    return FoldNeighbours(index, sims, searched)
