"""The model: similarity-weighted mean of the scores of the K most similar rated vectors.

Neighbour search is exact. Candidates are found with a float32 matrix product
and a partial selection per block of queries (memory stays bounded, no full
sort); the candidates are then re-ranked with float64 similarities so results
equal a float64 brute-force search. Training samples may share vectors (one
image rated many times): similarities are computed once per distinct vector.
Ties are broken by training order, the earlier sample first.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from percept.errors import PerceptError
from percept.model.weighting import (
    DEFAULT_WEIGHTING,
    check_weighting,
    neighbour_weights,
)

#: Extra candidates kept from the float32 pass so float64 re-ranking stays exact.
RERANK_MARGIN = 8
#: Queries per block: bounds the similarity block to BLOCK x distinct training vectors.
DEFAULT_BLOCK = 1024
#: Queries re-ranked at once: bounds the gathered float64 candidates to ROWS x candidates x dim.
RERANK_ROWS = 16
#: Threads for re-ranking (gathering candidate rows is memory-bound, not BLAS work).
THREADS = max(1, min(8, os.cpu_count() or 1))
#: Columns per strided group in :func:`top_columns`.
GROUP = 8


def l2_normalise(vectors: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    out = converted(vectors, dtype)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]
    norms[norms == 0] = 1.0
    out /= norms
    return out


def converted(vectors: np.ndarray, dtype=np.float64, chunk: int = 256) -> np.ndarray:
    """A new ``dtype`` copy of ``vectors``; float16 goes through float32 a chunk at a time, which
    gives the same values many times faster than numpy's direct float16 conversion."""
    vectors = np.asarray(vectors)
    if vectors.dtype != np.float16 or np.dtype(dtype) == np.float32:
        return np.array(vectors, dtype=dtype)
    out = np.empty(vectors.shape, dtype=dtype)
    for start in range(0, len(vectors), chunk):
        out[start:start + chunk] = vectors[start:start + chunk].astype(np.float32)
    return out


@dataclass(frozen=True)
class Neighbours:
    """The K nearest training samples of each query, most similar first."""

    index: np.ndarray  # (m, K) positions in the training samples
    similarity: np.ndarray  # (m, K) float64 cosine similarities


class KNNRegressor:
    """K-nearest-neighbour regression on unit vectors with cosine similarity.

    ``fit(vectors, scores, rows)``: ``vectors`` holds distinct unit vectors,
    ``rows[j]`` names the vector of training sample j (default: one sample per
    row) and ``scores[j]`` its score.
    """

    def __init__(self, k: int = 10, weighting: str = DEFAULT_WEIGHTING, block_size: int = DEFAULT_BLOCK):
        if int(k) < 1:
            raise PerceptError(f"K must be a positive integer, got {k}")
        self.k = int(k)
        self.weighting = check_weighting(weighting)
        self.block_size = int(block_size)

    def fit(self, vectors: np.ndarray, scores: np.ndarray, rows: np.ndarray | None = None) -> "KNNRegressor":
        vectors = np.asarray(vectors)
        scores = np.asarray(scores, dtype=np.float64)
        rows = np.arange(len(vectors)) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(rows) != len(scores):
            raise PerceptError(f"{len(rows)} training rows but {len(scores)} scores")
        if len(scores) == 0:
            raise PerceptError("cannot fit a KNN model on zero training samples")
        distinct, sample_vector = np.unique(rows, return_inverse=True)
        self.vectors_ = vectors  # referenced, not copied: re-ranking gathers float64 rows from it
        self.distinct_ = distinct
        self.vectors32_ = float32_rows(vectors, distinct)
        self.scores_ = scores
        self.members_ = group_members(sample_vector, len(distinct))
        return self

    @property
    def n_samples(self) -> int:
        return len(self.scores_)

    def kneighbors(self, queries: np.ndarray, k: int | None = None) -> Neighbours:
        """The ``min(k, n_samples)`` nearest training samples of each query vector."""
        k = min(self.k if k is None else int(k), self.n_samples)
        queries = np.asarray(queries, dtype=np.float64)
        index = np.empty((len(queries), k), dtype=np.int64)
        sims = np.empty((len(queries), k), dtype=np.float64)
        for start in range(0, len(queries), self.block_size):
            stop = start + self.block_size
            index[start:stop], sims[start:stop] = self._block_neighbours(queries[start:stop], k)
        return Neighbours(index, sims)

    def predict(self, queries: np.ndarray, k: int | None = None) -> np.ndarray:
        """Predicted score of each query vector."""
        k = self.k if k is None else k
        return self.predict_many(queries, [k])[k]

    def predict_many(self, queries: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
        """Predictions for several K from one neighbour search with the largest K."""
        found = self.kneighbors(queries, max(ks))
        return {k: self.predict_from(found, k) for k in ks}

    def predict_from(self, found: Neighbours, k: int) -> np.ndarray:
        """Weighted mean score over the first K of already found neighbours."""
        return weighted_mean(found, self.scores_, k, self.weighting)

    def _block_neighbours(self, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_distinct = len(self.vectors32_)
        approx = block.astype(np.float32) @ self.vectors32_.T
        cand = top_columns(approx, min(k + RERANK_MARGIN, n_distinct))
        del approx
        exact = rerank(block, self.vectors_, self.distinct_[cand])
        return nearest_samples(self.members_, cand, exact, k)


def group_members(vector_of: np.ndarray, n_distinct: int) -> np.ndarray:
    """(distinct, width) positions of the samples of each distinct vector, ascending, ``-1`` padded."""
    order = np.argsort(vector_of, kind="stable")
    counts = np.bincount(vector_of, minlength=n_distinct)
    members = np.full((n_distinct, int(counts.max(initial=1))), -1, dtype=np.int64)
    members[vector_of[order], np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)] = order
    return members


def nearest_samples(members: np.ndarray, cand: np.ndarray, exact: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """The K most similar samples of candidate vectors (``cand`` -1: no candidate), ties by sample position.

    ``exact`` holds each candidate's similarity; each candidate expands to its samples (``members``).
    """
    samples = members[np.maximum(cand, 0)]
    samples[cand < 0] = -1
    samples = samples.reshape(len(cand), -1)
    sample_sims = np.repeat(exact, members.shape[1], axis=1)
    sample_sims[samples < 0] = -np.inf
    tiebreak = np.where(samples < 0, np.iinfo(np.int64).max, samples)
    order = np.lexsort((tiebreak, -sample_sims), axis=1)[:, :k]
    return np.take_along_axis(samples, order, axis=1), np.take_along_axis(sample_sims, order, axis=1)


def weighted_mean(found: Neighbours, scores: np.ndarray, k: int, weighting: str) -> np.ndarray:
    """Each query's weighted mean of ``scores`` over its first K neighbours (most similar first)."""
    k = min(k, found.index.shape[1])
    weights = neighbour_weights(found.similarity[:, :k], weighting)
    return np.sum(weights * scores[found.index[:, :k]], axis=1)


def float32_rows(vectors: np.ndarray, rows: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``vectors[rows]`` as a contiguous float32 array, converted a chunk at a time (bounded memory)."""
    out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        out[start:start + chunk] = vectors[rows[start:start + chunk]]
    return out


def top_columns(values: np.ndarray, count: int) -> np.ndarray:
    """Per row, the columns of the ``count`` largest values (unordered; any choice among ties at the cut).

    Columns fall into strided groups of GROUP; a row's ``count`` largest values
    lie in the ``count`` groups with the largest maxima, so only those groups
    (and the few columns left over) go to the final partial selection.
    """
    rows, cols = values.shape
    if count >= cols:
        return np.broadcast_to(np.arange(cols), (rows, cols))
    groups = cols // GROUP
    if groups <= count:
        return np.argpartition(values, cols - count, axis=1)[:, cols - count:]
    maxima = values[:, :groups * GROUP].reshape(rows, GROUP, groups).max(axis=1)
    best = np.argpartition(maxima, groups - count, axis=1)[:, groups - count:]
    columns = (best[:, :, None] + groups * np.arange(GROUP)).reshape(rows, -1)
    columns = np.hstack([columns, np.broadcast_to(np.arange(groups * GROUP, cols), (rows, cols - groups * GROUP))])
    kept = np.take_along_axis(values, columns, axis=1)
    pick = np.argpartition(kept, kept.shape[1] - count, axis=1)[:, kept.shape[1] - count:]
    return np.take_along_axis(columns, pick, axis=1)


def rerank(queries: np.ndarray, vectors: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Float64 similarity of each query with its candidate rows of ``vectors`` (bounded gathers).

    The gathers are memory-bound and release the GIL, so the rows are split over threads.
    """
    exact = np.empty(cand.shape, dtype=np.float64)

    def rerank_rows(rows: range) -> None:
        for start in rows:
            part = slice(start, start + RERANK_ROWS)
            exact[part] = np.matmul(vectors[cand[part]], queries[part, :, None])[..., 0]

    starts = range(0, len(queries), RERANK_ROWS)
    workers = min(THREADS, len(starts))
    if workers <= 1:
        rerank_rows(starts)
    else:
        list(_pool().map(rerank_rows, [starts[i::workers] for i in range(workers)]))
    return exact


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(THREADS, thread_name_prefix="percept-rerank")
