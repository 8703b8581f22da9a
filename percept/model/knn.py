"""The model: similarity-weighted mean of the scores of the K most similar rated vectors.

Neighbour search is exact (:mod:`percept.model.exact_search`): a screen (bfloat16 products on AMX
tiles, or a float32 matrix product) with a rigorous error bound decides which vectors can be among the
K nearest, and those are ranked by
float64 similarity, so results equal a float64 brute-force search. Training samples may share
vectors (one image rated many times, or two images with equal embeddings): similarities are
computed once per distinct vector, and ties go to the earlier training sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from percept.errors import PerceptError
from percept.model.distinct import distinct_vectors, row_keys
from percept.model.exact_search import SearchSpace, exact32, rows32, rows64, search, stored32
from percept.model.unit_rows import Rows, UnitRows
from percept.model.weighting import (
    DEFAULT_WEIGHTING,
    check_weighting,
    neighbour_weights,
)

#: Queries searched at once (bounds the similarity block to BLOCK x distinct training vectors). Half of what
#: the scorer uses: an evaluation holds the next category's model while it searches one. Blocks go to whichever
#: search thread is free, so a core slowed by its neighbours on a shared machine holds up less of the search.
DEFAULT_BLOCK = 256
#: Candidates a device scorer (:mod:`percept.model.torch_scoring`) keeps beyond K before it checks,
#: with the screen's error bound, whether vectors outside them could still be neighbours.
RERANK_MARGIN = 8


def l2_normalise(vectors: ArrayLike, dtype: DTypeLike = np.float64) -> np.ndarray:
    """Rows scaled to unit length in float64 (zero rows stay zero), returned as ``dtype``."""
    out = np.asarray(UnitRows(np.asarray(vectors)))
    return out if np.dtype(dtype) == np.float64 else out.astype(dtype)


@dataclass(frozen=True)
class Neighbours:
    """The K nearest training samples of each query, most similar first."""

    index: np.ndarray  # (m, K) positions in the training samples
    similarity: np.ndarray  # (m, K) float64 cosine similarities


def sample_space(vectors: Rows, rows: np.ndarray) -> SearchSpace:
    """A search space whose samples are ``vectors[rows[j]]`` (an array or UnitRows), equal vectors merged."""
    distinct, sample_row = used_rows(np.asarray(rows, dtype=np.int64).ravel(), len(vectors))
    if exact32(vectors):
        firsts, vector_of = distinct_vectors(vectors.norms_of(distinct),
                                             lambda members: stored32(vectors, distinct[members]))
        return SearchSpace(vectors, distinct[firsts], [vector_of[sample_row]])
    screen = rows32(vectors, distinct)
    firsts, vector_of = distinct_vectors(row_keys(screen), lambda members: rows64(vectors, distinct[members]))
    if len(firsts) < len(distinct):
        screen = screen[firsts]
    return SearchSpace(vectors, distinct[firsts], [vector_of[sample_row]], vectors32=screen)


def used_rows(rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, return_inverse=True)`` for rows in 0..n_rows-1, by marking instead of sorting."""
    used = np.zeros(n_rows, dtype=bool)
    used[rows] = True
    distinct = np.flatnonzero(used)
    position = np.cumsum(used) - 1
    return distinct, position[rows]


class KNNRegressor:
    """K-nearest-neighbour regression on unit vectors with cosine similarity.

    ``fit(vectors, scores, rows)``: ``vectors`` holds unit vectors (an array, or :class:`UnitRows`),
    ``rows[j]`` names the vector of training sample j (default: one sample per row) and
    ``scores[j]`` its score.
    """

    def __init__(self, k: int = 10, weighting: str = DEFAULT_WEIGHTING, block_size: int = DEFAULT_BLOCK):
        if int(k) < 1:
            raise PerceptError(f"K must be a positive integer, got {k}")
        self.k = int(k)
        self.weighting = check_weighting(weighting)
        self.block_size = int(block_size)

    def fit(self, vectors: Rows, scores: np.ndarray, rows: np.ndarray | None = None) -> KNNRegressor:
        vectors = vectors if isinstance(vectors, UnitRows) else np.asarray(vectors)
        scores = np.asarray(scores, dtype=np.float64)
        rows = np.arange(len(vectors)) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(rows) != len(scores):
            raise PerceptError(f"{len(rows)} training rows but {len(scores)} scores")
        if len(scores) == 0:
            raise PerceptError("cannot fit a KNN model on zero training samples")
        self.space_ = sample_space(vectors, rows)
        self.scores_ = scores
        return self

    @property
    def n_samples(self) -> int:
        return len(self.scores_)

    def kneighbors(self, queries: Rows, k: int | None = None, rows: np.ndarray | None = None) -> Neighbours:
        """The ``min(k, n_samples)`` nearest training samples of each query vector (``queries[rows]`` if given)."""
        k = self.k if k is None else int(k)
        if not isinstance(queries, UnitRows):
            queries = np.asarray(queries)
            if queries.ndim != 2 or queries.shape[1] != self.space_.dim:
                raise PerceptError(f"query vectors have shape {queries.shape}, but the training vectors have "
                                   f"{self.space_.dim} dimensions")
        found = search(self.space_, queries, k, rows=rows, block=self.block_size)[0]
        return Neighbours(found.index, found.similarity)

    def predict(self, queries: Rows, k: int | None = None) -> np.ndarray:
        """Predicted score of each query vector."""
        k = self.k if k is None else k
        return self.predict_many(queries, [k])[k]

    def predict_many(self, queries: Rows, ks: list[int]) -> dict[int, np.ndarray]:
        """Predictions for several K from one neighbour search with the largest K."""
        found = self.kneighbors(queries, max(ks))
        return {k: self.predict_from(found, k) for k in ks}

    def predict_from(self, found: Neighbours, k: int) -> np.ndarray:
        """Weighted mean score over the first K of already found neighbours."""
        return weighted_mean(found, self.scores_, k, self.weighting)


class Nearest(Protocol):
    """The K nearest samples of each query, most similar first: :class:`Neighbours`, or lists like them."""

    @property
    def index(self) -> np.ndarray: ...

    @property
    def similarity(self) -> np.ndarray: ...


def weighted_mean(found: Nearest, scores: np.ndarray, k: int, weighting: str) -> np.ndarray:
    """Each query's weighted mean of ``scores`` over its first K neighbours (most similar first)."""
    k = min(k, found.index.shape[1])
    weights = neighbour_weights(found.similarity[:, :k], weighting)
    return np.sum(weights * scores[found.index[:, :k]], axis=1)
