"""Neighbour lists shared by every cross-validation fold of one category.

The folds of every repeat partition the same samples, so the nearest samples of
each sample are searched once: for every distinct vector, its ``length``
nearest distinct vectors of the category, expanded to their samples and
ordered most similar first, ties by sample position (the training order of
every fold). A fold's neighbours of a test sample are the first K entries of
its list that lie in the fold's training part; rows whose list holds too few
training samples are searched directly with ``KNNRegressor``, so results equal
a per-fold ``KNNRegressor`` search.

The search runs as ``KNNRegressor``'s does: a float32 matrix product of blocks
of rows against all distinct vectors (memory stays bounded), a partial
selection with a margin of extra candidates, then float64 re-ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from percept.model.knn import (
    RERANK_MARGIN,
    KNNRegressor,
    group_members,
    rerank,
    top_columns,
)

#: Similarity values per block of rows: bounds the float32 block to about 32 MB.
BLOCK_VALUES = 8 * 1024 * 1024


def list_length(k_max: int, folds: int) -> int:
    """Distinct vectors kept per list for searches up to ``k_max`` neighbours.

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
    """Each distinct vector's nearest samples, most similar first (``-1`` pads a short list)."""

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


def neighbour_lists(vectors: np.ndarray, rows: np.ndarray, length: int) -> NeighbourLists:
    """Lists of the ``length`` nearest distinct vectors (as samples) of every distinct vector in ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    distinct, vector_of = np.unique(rows, return_inverse=True)
    x64 = np.asarray(vectors[distinct], dtype=np.float64)
    x32 = x64.astype(np.float32)
    length = min(int(length), len(distinct))
    members = group_members(vector_of, len(distinct))
    samples = np.empty((len(distinct), length), dtype=np.int64)
    sims = np.empty((len(distinct), length), dtype=np.float64)
    block = max(1, BLOCK_VALUES // len(distinct))
    for start in range(0, len(distinct), block):
        part = slice(start, start + block)
        cand = top_columns(x32[part] @ x32.T, min(length + RERANK_MARGIN, len(distinct)))
        exact = rerank(x64[part], x64, cand)
        samples[part], sims[part] = _block_lists(cand, exact, members, length)
    return NeighbourLists(vector_of, distinct, samples, sims)


def _block_lists(cand: np.ndarray, exact: np.ndarray, members: np.ndarray,
                 length: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample lists of a block of rows from their candidate vectors and float64 similarities.

    Unless every vector is kept, the ``length`` most similar candidates are kept
    and values equal to the smallest of those are dropped: vectors tied with it
    may have been left out.
    """
    rows = len(cand)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :length]
    cand, exact = np.take_along_axis(cand, order, axis=1), np.take_along_axis(exact, order, axis=1)
    samples = members[cand].reshape(rows, -1)
    sims = np.repeat(exact, members.shape[1], axis=1)
    invalid = samples < 0
    if length < len(members):
        invalid |= sims <= exact[:, -1:]
    samples[invalid] = -1
    sims[invalid] = -np.inf
    tiebreak = np.where(invalid, np.iinfo(np.int64).max, samples)
    order = np.lexsort((tiebreak, -sims), axis=1)[:, :length]
    return np.take_along_axis(samples, order, axis=1), np.take_along_axis(sims, order, axis=1)


def fold_neighbours(lists: NeighbourLists, vectors: np.ndarray, rows: np.ndarray, train: np.ndarray,
                    query_vectors: np.ndarray, k: int) -> FoldNeighbours:
    """The ``min(k, len(train))`` nearest training samples of each query distinct vector.

    ``train`` holds the training sample positions in ascending order;
    ``query_vectors`` indexes the distinct vectors of ``lists``.
    """
    k = min(int(k), len(train))
    is_train = np.zeros(len(lists.vector_of), dtype=bool)
    is_train[train] = True
    cand = lists.samples[query_vectors]
    keep = (cand >= 0) & is_train[cand]
    rank = np.cumsum(keep, axis=1)
    searched = rank[:, -1] < k
    take = keep & (rank <= k) & ~searched[:, None]
    index = np.empty((len(cand), k), dtype=np.int64)
    sims = np.empty((len(cand), k), dtype=np.float64)
    index[~searched] = cand[take].reshape(-1, k)
    sims[~searched] = lists.similarity[query_vectors][take].reshape(-1, k)
    if searched.any():
        model = KNNRegressor(k).fit(vectors, np.zeros(len(train)), rows[train])
        found = model.kneighbors(vectors[lists.distinct[query_vectors[searched]]], k)
        index[searched], sims[searched] = train[found.index], found.similarity
    return FoldNeighbours(index, sims, searched)
