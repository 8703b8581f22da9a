"""Score vectors in every category of an exported model at once.

The categories of a model usually share their vectors, and demographic models
repeat a vector once per rating, so the rows of all categories are reduced to
distinct vectors when the scorer is built. Each block of queries is compared
with the distinct vectors once (float32 matrix product) and one shared set of
candidates is selected for all categories. Within it, only the candidates whose
float32 similarity lies within the float32 error bound of a category's K-th
best are re-ranked with float64 similarities; queries whose neighbours might
lie outside the shared set take a per-category search. Each category's
neighbours thus equal those of a :class:`~percept.model.knn.KNNRegressor` fitted on
that category alone (similarities agree to float64 rounding).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from percept.errors import PerceptError
from percept.model.io import ExportedModel, ModelSettings
from percept.model.knn import (
    DEFAULT_BLOCK,
    RERANK_MARGIN,
    RERANK_ROWS,
    Neighbours,
    group_members,
    nearest_samples,
    rerank,
    top_columns,
    weighted_mean,
)
from percept.model.weighting import check_weighting

#: Candidates kept beyond those the categories need from the shared selection.
SHARED_EXTRA = 8


@dataclass
class _Category:
    """One category's samples over the distinct vectors."""

    scores: np.ndarray  # (samples,) scores in model order
    vectors: np.ndarray  # (distinct in this category,) positions in the shared distinct vectors
    local: np.ndarray  # (all distinct,) position within ``vectors`` or -1
    members: np.ndarray  # (distinct in this category, width) sample positions, -1 padded
    sample_vector: np.ndarray  # (samples,) position in the shared distinct vectors


@dataclass(frozen=True)
class SimilarImage:
    """A distinct survey vector near a query: its similarity and mean rating per category (NaN if unrated)."""

    vector: int
    similarity: float
    ratings: dict[str, float]
    counts: dict[str, int]


def distinct_rows(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct rows over several arrays (hashing each row), and each array's row → distinct position."""
    seen: dict[bytes, int] = {}
    kept: list[np.ndarray] = []
    positions = []
    for array in arrays:
        array = np.ascontiguousarray(array, dtype=np.float64)
        where = np.empty(len(array), dtype=np.int64)
        for i, row in enumerate(array):
            key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
            if key not in seen:
                seen[key] = len(kept)
                kept.append(row)
            where[i] = seen[key]
        positions.append(where)
    dim = arrays[0].shape[1] if arrays else 0
    return (np.stack(kept) if kept else np.empty((0, dim))), positions


def _group(sample_vector: np.ndarray, scores: np.ndarray, n_vectors: int) -> _Category:
    distinct, inverse = np.unique(sample_vector, return_inverse=True)
    local = np.full(n_vectors, -1, dtype=np.int64)
    local[distinct] = np.arange(len(distinct))
    return _Category(np.asarray(scores, dtype=np.float64), distinct, local,
                     group_members(inverse, len(distinct)), sample_vector)


class MultiScorer:
    """KNN predictions for every category of an exported model from one similarity pass per query block."""

    def __init__(self, model: ExportedModel, k: int | None = None, weighting: str | None = None,
                 block_size: int = DEFAULT_BLOCK, threads: int | None = None):
        settings = model.settings or ModelSettings()
        self.k = int(settings.k if k is None else k)
        if self.k < 1:
            raise PerceptError(f"K must be a positive integer, got {self.k}")
        self.weighting = check_weighting(settings.weighting if weighting is None else weighting)
        self.block_size = int(block_size)
        self.threads = threads or os.cpu_count() or 1
        self.categories = list(model.categories)
        for category in self.categories:
            if len(model.scores[category]) == 0:
                raise PerceptError(f"the model has no {category} samples: re-export it")
        self.vectors64, positions = distinct_rows([model.vectors[c] for c in self.categories])
        self.vectors32 = self.vectors64.astype(np.float32)
        self._cats = {}
        for category, where in zip(self.categories, positions):
            self._cats[category] = _group(where, model.scores[category], len(self.vectors64))

    @property
    def dim(self) -> int:
        return self.vectors64.shape[1]

    @property
    def n_vectors(self) -> int:
        return len(self.vectors64)

    def n_samples(self, category: str) -> int:
        return len(self._cats[category].scores)

    def sample_vectors(self, category: str) -> np.ndarray:
        """For each sample of ``category``, its position in the distinct vectors."""
        return self._cats[category].sample_vector

    def predict(self, queries: np.ndarray) -> np.ndarray:
        """(n, categories) predicted scores of unit query vectors, columns in ``self.categories`` order."""
        return self.predict_with_neighbours(queries)[0]

    def predict_with_neighbours(self, queries: np.ndarray) -> tuple[np.ndarray, dict[str, Neighbours]]:
        """Predictions and, per category, the K nearest samples of each query."""
        queries = self._check(queries)
        out = np.empty((len(queries), len(self.categories)), dtype=np.float64)
        found = {c: [] for c in self.categories}
        starts = range(0, len(queries), self.block_size)
        blocks = (queries[start:start + self.block_size] for start in starts)
        with ThreadPoolExecutor(self.threads) as pool:
            for start, result in zip(starts, pool.map(self._block, blocks)):
                for column, (category, hits) in enumerate(result.items()):
                    out[start:start + len(hits.index), column] = self._weighted(category, hits)
                    found[category].append(hits)
        neighbours = {c: Neighbours(np.concatenate([h.index for h in found[c]]),
                                    np.concatenate([h.similarity for h in found[c]])) if found[c]
                      else Neighbours(np.empty((0, self._k(c)), np.int64), np.empty((0, self._k(c))))
                      for c in self.categories}
        return out, neighbours

    def similar(self, query: np.ndarray, count: int) -> list[SimilarImage]:
        """The ``count`` distinct survey vectors most similar to one query, most similar first."""
        query = self._check(np.asarray(query).reshape(1, -1))[0]
        sims = self.vectors64 @ query
        count = min(int(count), len(sims))
        top = np.argpartition(-sims, count - 1)[:count] if count < len(sims) else np.arange(len(sims))
        top = top[np.lexsort((top, -sims[top]))]
        result = []
        for vector in top:
            ratings, counts = {}, {}
            for category, group in self._cats.items():
                position = group.local[vector]
                samples = group.members[position] if position >= 0 else np.empty(0, np.int64)
                samples = samples[samples >= 0]
                counts[category] = int(len(samples))
                ratings[category] = float(group.scores[samples].mean()) if len(samples) else float("nan")
            result.append(SimilarImage(int(vector), float(sims[vector]), ratings, counts))
        return result

    def _check(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries, dtype=np.float64)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise PerceptError(f"query vectors have shape {queries.shape}, but the model's vectors have "
                               f"{self.dim} dimensions: use the CLIP model the model was built with")
        return queries

    def _k(self, category: str) -> int:
        return min(self.k, self.n_samples(category))

    def _n_cand(self, category: str) -> int:
        return min(self._k(category) + RERANK_MARGIN, len(self._cats[category].vectors))

    def _shared_count(self) -> int:
        """Shared candidates per query: enough that each category usually finds its own among them.

        A category holding a share f of the distinct vectors expects f * M of M shared candidates;
        four standard deviations of headroom make its slower fallback rare.
        """
        needed = 0
        for category, group in self._cats.items():
            share, n = len(group.vectors) / self.n_vectors, self._n_cand(category)
            needed = max(needed, int(np.ceil((n + 4 * np.sqrt(n * (1 - share))) / share)))
        return min(needed + SHARED_EXTRA, self.n_vectors)

    def _weighted(self, category: str, hits: Neighbours) -> np.ndarray:
        return weighted_mean(hits, self._cats[category].scores, hits.index.shape[1], self.weighting)

    def _block(self, block: np.ndarray) -> dict[str, Neighbours]:
        approx = block.astype(np.float32) @ self.vectors32.T
        shared = self._shared_count()
        cand = top_columns(approx, shared)
        near = np.take_along_axis(approx, cand, axis=1).astype(np.float64)
        # Every vector outside the shared candidates is at most this similar (float32 pass).
        floor = near.min(axis=1) if shared < self.n_vectors else np.full(len(block), -np.inf)
        slack = 2 * float32_error(self.dim)
        windows, needed = {}, np.zeros(cand.shape, dtype=bool)
        for category, group in self._cats.items():
            local = group.local[cand]
            member = np.where(local >= 0, near, -np.inf)
            kth = min(self._k(category), len(group.vectors))
            bound = -np.partition(-member, kth - 1, axis=1)[:, kth - 1] - slack
            # Members below the bound have K samples surely more similar; outside vectors too if below it.
            window = (member >= bound[:, None]) & (bound > floor)[:, None]
            windows[category] = (np.where(window, local, -1), bound > floor)
            needed |= window
        exact = rerank_where(block, self.vectors64, cand, needed)
        result = {}
        for category, group in self._cats.items():
            local, enough = windows[category]
            index = np.empty((len(block), self._k(category)), dtype=np.int64)
            sims = np.empty(index.shape, dtype=np.float64)
            if enough.any():
                index[enough], sims[enough] = nearest_samples(group.members, local[enough], exact[enough], self._k(category))
            short = np.flatnonzero(~enough)
            if len(short):
                own = top_columns(approx[short][:, group.vectors], self._n_cand(category))
                own_exact = rerank(block[short], self.vectors64, group.vectors[own])
                index[short], sims[short] = nearest_samples(group.members, own, own_exact, self._k(category))
            result[category] = Neighbours(index, sims)
        return result

def rerank_where(queries: np.ndarray, vectors64: np.ndarray, cand: np.ndarray, needed: np.ndarray) -> np.ndarray:
    """Like :func:`rerank`, only where ``needed`` (NaN elsewhere): needed candidates are moved to the front."""
    order = np.argsort(~needed, axis=1, kind="stable")
    counts = needed.sum(axis=1)
    exact = np.full(cand.shape, np.nan)
    for sub in range(0, len(queries), RERANK_ROWS):
        part = slice(sub, sub + RERANK_ROWS)
        width = int(counts[part].max(initial=0))
        if width:
            columns = order[part, :width]
            rows = vectors64[np.take_along_axis(cand[part], columns, axis=1)]
            np.put_along_axis(exact[part], columns, np.matmul(rows, queries[part, :, None])[..., 0], axis=1)
    return exact


def float32_error(dim: int) -> float:
    """Bound on |float32 dot product - float64 dot product| for unit vectors of ``dim`` elements."""
    return (dim + 8) * 2.0 ** -24


def check_encoder(settings: ModelSettings | None, dim: int, encoder_name: str, encoder_dim: int,
                  weights_id: str | None = None) -> None:
    """Refuse an encoder whose model name, weights or vector size differ from those the model was built with."""
    if settings is not None and settings.environmental_method:
        raise PerceptError(f"this model combines image vectors with environmental prompts "
                           f"({settings.environmental_method}): scoring a photo alone needs a model exported "
                           "without --environmental")
    if settings is not None and settings.clip_model and settings.clip_model != encoder_name:
        raise PerceptError(f"the model was built with CLIP model {settings.clip_model!r}, not {encoder_name!r}: "
                           "drop --clip-model or give the model's own")
    if settings is not None and settings.weights_id and weights_id and settings.weights_id != weights_id:
        raise PerceptError(f"the model was built with weights {settings.weights_id!r}, but the encoder loaded "
                           f"{weights_id!r}: give the same --pretrained weights")
    if encoder_dim != dim:
        raise PerceptError(f"encoder {encoder_name!r} makes {encoder_dim}-dimensional vectors but the model's "
                           f"have {dim}: use the CLIP model the model was built with")
