"""Predictions with their uncertainty, for every category of an exported model.

Each prediction comes with the weighted standard deviation of its neighbours' scores, the
query's best similarity to the survey and an out-of-domain flag
(:mod:`percept.model.uncertainty`). Queries named after survey images are marked ``in_survey``
and, unless asked otherwise, scored without their own samples
(:mod:`percept.model.leave_one_out`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from percept.model.exact_search import THREADS, worker_pool
from percept.model.io import ExportedModel
from percept.model.knn import Neighbours
from percept.model.leave_one_out import image_keys, leave_out
from percept.model.scoring import MultiScorer
from percept.model.uncertainty import best_similarity, is_out_of_domain, weighted_sd
from percept.model.weighting import neighbour_weights

#: The fewest rows worth a worker thread of their own in neighbour statistics (numpy lets go of the GIL in
#: its loops).
MIN_PART_ROWS = 256


@dataclass(frozen=True)
class Estimates:
    """Per query: scores and their sd per category (columns in the scorer's order), and the domain check."""

    scores: np.ndarray  # (m, categories)
    sd: np.ndarray  # (m, categories)
    best_similarity: np.ndarray  # (m,)
    out_of_domain: np.ndarray  # (m,) bool
    in_survey: np.ndarray  # (m,) bool


def neighbour_statistics(found: Neighbours, counts: np.ndarray, scores: np.ndarray,
                         weighting: str) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and sd of ``scores`` over each row's first ``counts`` neighbours (NaN for none)."""
    mean = np.full(len(counts), np.nan)
    sd = np.full(len(counts), np.nan)
    for count in np.unique(counts):
        if count == 0:
            continue
        rows = np.flatnonzero(counts == count)
        if len(rows) == len(counts):
            rows = slice(None)  # every row: views, not copies
        weights = neighbour_weights(found.similarity[rows, :count], weighting)
        values = scores[found.index[rows, :count]]
        mean[rows] = np.sum(weights * values, axis=1)
        sd[rows] = weighted_sd(values, weights)
    return mean, sd


class Estimator:
    """Scores with uncertainty from a :class:`MultiScorer`; ``image_key`` maps a survey image name to
    the key queries are named by (default: the name itself)."""

    def __init__(self, model: ExportedModel, k: int | None = None, image_key: Callable[[str], str] = str,
                 scorer: MultiScorer | None = None):
        self.model = model
        self.scorer = scorer or MultiScorer(model, k=k)
        self.threshold = model.domain_threshold
        self.keys = image_keys(model.images, {c: len(model.scores[c]) for c in self.categories}, image_key)
        self._scores = {c: np.asarray(model.scores[c], dtype=np.float64) for c in self.categories}
        self._wide: MultiScorer | None = None

    @property
    def categories(self) -> list[str]:
        return self.scorer.categories

    def in_survey(self, keys: Sequence[str]) -> np.ndarray:
        """True for query keys that name a survey image of the model."""
        return self.keys.lookup(keys) >= 0

    def estimate(self, queries: np.ndarray, keys: Sequence[str] | None = None,
                 include_self: bool = False) -> Estimates:
        """Estimates for unit query vectors; queries whose ``keys`` name survey images are left out of
        their own neighbours unless ``include_self``."""
        numbers = self.keys.lookup(keys) if keys is not None else np.full(len(queries), -1, dtype=np.int64)
        survey = numbers >= 0
        out = self._empty(len(queries), survey)
        own = survey if not include_self else np.zeros(len(queries), dtype=bool)
        if own.any():
            self._fill(out, np.flatnonzero(~own), queries[~own])
            self._fill_left_out(out, np.flatnonzero(own), queries[own], numbers[own])
        else:
            self._fill(out, slice(None), queries)  # every query: no copy
        return out

    def _empty(self, m: int, survey: np.ndarray) -> Estimates:
        width = len(self.categories)
        return Estimates(np.full((m, width), np.nan), np.full((m, width), np.nan), np.full(m, np.nan),
                         np.zeros(m, dtype=bool), survey)

    def _fill(self, out: Estimates, rows: np.ndarray | slice, queries: np.ndarray) -> None:
        if not len(queries):
            return
        found = self.scorer.neighbours(queries)
        counts = {c: np.full(len(queries), found[c].index.shape[1]) for c in self.categories}

        def fill(part: slice) -> None:
            for column, category in enumerate(self.categories):
                hits = Neighbours(found[category].index[part], found[category].similarity[part])
                where = part if isinstance(rows, slice) else rows[part]
                out.scores[where, column], out.sd[where, column] = neighbour_statistics(
                    hits, counts[category][part], self._scores[category], self.scorer.weighting)

        parts = _row_parts(len(queries))
        if len(parts) > 1:
            list(worker_pool().map(fill, parts))
        else:
            fill(parts[0])
        self._domain(out, rows, found, counts)

    def _fill_left_out(self, out: Estimates, rows: np.ndarray, queries: np.ndarray, numbers: np.ndarray) -> None:
        _, wide = self._wide_scorer().predict_with_neighbours(queries)
        found, counts = {}, {}
        for column, category in enumerate(self.categories):
            excluded = self.keys.samples[category][wide[category].index] == numbers[:, None]
            found[category], counts[category] = leave_out(wide[category], excluded, self.scorer.k)
            out.scores[rows, column], out.sd[rows, column] = neighbour_statistics(
                found[category], counts[category], self._scores[category], self.scorer.weighting)
        self._domain(out, rows, found, counts)

    def _domain(self, out: Estimates, rows: np.ndarray | slice, found: dict[str, Neighbours],
                counts: dict[str, np.ndarray]) -> None:
        best = best_similarity([found[c] for c in self.categories], [counts[c] for c in self.categories])
        out.best_similarity[rows] = best
        out.out_of_domain[rows] = is_out_of_domain(best, self.threshold)

    def _wide_scorer(self) -> MultiScorer:
        """The scorer searching K plus the most samples one image has in any category (a shallow copy:
        it shares the scorer's vectors)."""
        if self._wide is None:
            self._wide = copy.copy(self.scorer)
            self._wide.k = self.scorer.k + max(self.keys.widest(c) for c in self.categories)
        return self._wide


def _row_parts(m: int) -> list[slice]:
    """Consecutive parts of ``m`` rows, one per worker thread (one part for few rows)."""
    count = max(1, min(THREADS, m // MIN_PART_ROWS))
    bounds = np.linspace(0, m, count + 1).astype(int)
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]

