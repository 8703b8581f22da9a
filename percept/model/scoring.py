"""Score vectors in every category of an exported model at once.

The categories of a model usually share their vectors, and demographic models
repeat a vector once per rating, so the rows of all categories are reduced to
distinct vectors when the scorer is built. One exact search
(:mod:`percept.model.exact_search`) serves all categories: each block of queries
is compared with the distinct vectors once (the screen of
:mod:`percept.model.screens`), and each category's neighbours are decided with
the screen's rigorous error bound and ranked by float64 similarity. They equal those of a
:class:`~percept.model.knn.KNNRegressor` fitted on that category alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from percept.errors import PerceptError
from percept.model.distinct import distinct_rows
from percept.model.exact_search import THREADS, SearchSpace, search
from percept.model.io import ExportedModel, ModelSettings
from percept.model.knn import Neighbours, weighted_mean
from percept.model.quotient_members import QuotientRows
from percept.model.unit_rows import Rows, UnitRows, row_span
from percept.model.weighting import check_weighting

#: Queries a scorer searches at once per thread (bounds its similarity block to this x distinct vectors).
#: Blocks go to whichever search thread is free: smaller ones even out threads on cores of uneven speed.
SCORING_BLOCK = 512


@dataclass(frozen=True)
class SimilarImage:
    """A distinct survey vector near a query: its similarity and mean rating per category (NaN if unrated)."""

    vector: int
    similarity: float
    ratings: dict[str, float]
    counts: dict[str, int]


class MultiScorer:
    """KNN predictions for every category of an exported model from one similarity pass per query block."""

    #: Blocks each search thread gets per search: several, so that a thread on a faster core takes more of
    #: them (one each made the faster thread wait for the slower at every block).
    blocks_per_thread = 4

    def __init__(self, model: ExportedModel, k: int | None = None, weighting: str | None = None,
                 block_size: int = SCORING_BLOCK, threads: int | None = None):
        settings = model.settings or ModelSettings()
        self.k = int(settings.k if k is None else k)
        if self.k < 1:
            raise PerceptError(f"K must be a positive integer, got {self.k}")
        self.weighting = check_weighting(settings.weighting if weighting is None else weighting)
        self.block_size = int(block_size)
        self.threads = threads
        self.categories = list(model.categories)
        for category in self.categories:
            if len(model.scores[category]) == 0:
                raise PerceptError(f"the model has no {category} samples: re-export it")
        quotients = model.quotients
        self._quotients: QuotientRows | None = None
        if quotients is not None and set(quotients.rows) == set(self.categories):
            # the file's distinct rows as quotient rows, checked against its vectors when it was read: searched
            # from their numerators, the float64 rows made only when asked for
            self._quotients, positions = quotients, [quotients.rows[c] for c in self.categories]
            self.space = SearchSpace(None, np.arange(len(quotients.numerators)), positions,
                                     quotients=(quotients.numerators, quotients.divisors))
        else:
            self.vectors64, positions = distinct_rows([model.vectors[c] for c in self.categories])
            self.space = SearchSpace(self.vectors64, np.arange(len(self.vectors64)), positions)
        self._positions = dict(zip(self.categories, positions))
        self._scores = {c: np.asarray(model.scores[c], dtype=np.float64) for c in self.categories}
        self._cats = {c: _group(where) for c, where in self._positions.items()}

    @functools.cached_property
    def vectors64(self) -> np.ndarray:
        """The distinct vectors (float64 rows; made from the quotient rows when first asked for)."""
        assert self._quotients is not None  # set in __init__ otherwise
        return self._quotients.vectors()

    @property
    def dim(self) -> int:
        return self.space.dim

    @property
    def n_vectors(self) -> int:
        return self.space.n_vectors

    def n_samples(self, category: str) -> int:
        return len(self._scores[category])

    def sample_vectors(self, category: str) -> np.ndarray:
        """For each sample of ``category``, its position in the distinct vectors."""
        return self._positions[category]

    def predict(self, queries: np.ndarray) -> np.ndarray:
        """(n, categories) predicted scores of unit query vectors, columns in ``self.categories`` order."""
        return self.predict_with_neighbours(queries)[0]

    def predict_with_neighbours(self, queries: np.ndarray) -> tuple[np.ndarray, dict[str, Neighbours]]:
        """Predictions and, per category, the K nearest samples of each query."""
        neighbours = self.neighbours(queries)
        out = np.empty((len(neighbours[self.categories[0]].index), len(self.categories)), dtype=np.float64)
        for column, category in enumerate(self.categories):
            hits = neighbours[category]
            out[:, column] = weighted_mean(hits, self._scores[category], hits.index.shape[1], self.weighting)
        return out, neighbours

    def neighbours(self, queries: Rows) -> dict[str, Neighbours]:
        """Per category, the K nearest samples of each query (unit float64 rows, or :class:`UnitRows`, which each
        block of the search widens for itself), most similar first."""
        queries = self._check(queries)
        step = self.block_size * (self.threads or THREADS) * self.blocks_per_thread
        found = [self._block(row_span(queries, start, start + step)) for start in range(0, len(queries), step)]
        if len(found) == 1:
            return found[0]
        return {c: Neighbours(np.concatenate([f[c].index for f in found] or [np.empty((0, self._k(c)), int)]),
                              np.concatenate([f[c].similarity for f in found] or [np.empty((0, self._k(c)))]))
                for c in self.categories}

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
            for category in self.categories:
                group = self._cats[category]
                position = np.searchsorted(group.vectors, vector)
                found = position < len(group.vectors) and group.vectors[position] == vector
                mine = group.members[position][group.members[position] >= 0] if found else np.empty(0, np.int64)
                counts[category] = int(len(mine))
                ratings[category] = float(self._scores[category][mine].mean()) if len(mine) else float("nan")
            result.append(SimilarImage(int(vector), float(sims[vector]), ratings, counts))
        return result

    def _k(self, category: str) -> int:
        return min(self.k, self.n_samples(category))

    def _block(self, block: Rows) -> dict[str, Neighbours]:
        """Each category's K nearest samples of a chunk of queries (device scorers search their own way)."""
        found = search(self.space, block, self.k, block=self.block_size, threads=self.threads or THREADS)
        return {c: Neighbours(f.index, f.similarity) for c, f in zip(self.categories, found)}

    def _check(self, queries: Rows) -> Rows:
        if not isinstance(queries, UnitRows):
            queries = np.asarray(queries, dtype=np.float64)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise PerceptError(f"query vectors have shape {queries.shape}, but the model's vectors have "
                               f"{self.dim} dimensions: use the CLIP model the model was built with")
        return queries


@dataclass(frozen=True)
class _Group:
    """One category's samples over the distinct vectors (as device scorers search them)."""

    vectors: np.ndarray  # (distinct in this category,) ascending positions in the shared distinct vectors
    members: np.ndarray  # (distinct in this category, width) sample positions, ascending, -1 padded


def _group(vector_of: np.ndarray) -> _Group:
    vectors, local = np.unique(vector_of, return_inverse=True)
    local = local.ravel()
    order = np.argsort(local, kind="stable")
    counts = np.bincount(local, minlength=len(vectors))
    members = np.full((len(vectors), int(counts.max(initial=1))), -1, dtype=np.int64)
    members[local[order], np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)] = order
    return _Group(vectors, members)


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
