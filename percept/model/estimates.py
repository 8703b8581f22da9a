"""Predictions with their uncertainty, for every category of an exported model.

Each prediction comes with the weighted standard deviation of its neighbours' scores, a
calibrated prediction interval where the model has a calibration (:mod:`percept.model.conformal`),
the query's best similarity to the survey, its dissimilarity index and an out-of-domain flag
(:mod:`percept.model.uncertainty`, :mod:`percept.model.domain`). Queries named after survey
images are marked ``in_survey`` and, unless asked otherwise, scored without their own samples
(:mod:`percept.model.leave_one_out`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from percept.errors import PerceptError
from percept.model.conformal import DEFAULT_LEVEL, check_level, interval
from percept.model.domain import dissimilarity
from percept.model.exact_search import THREADS, on_workers
from percept.model.io import ExportedModel
from percept.model.knn import Neighbours
from percept.model.leave_one_out import image_keys, leave_out
from percept.model.scoring import MultiScorer
from percept.model.uncertainty import best_similarity, is_out_of_domain, weighted_sd
from percept.model.unit_rows import Rows
from percept.model.weighting import neighbour_weights

#: The fewest rows worth a worker thread of their own in neighbour statistics (numpy lets go of the GIL in
#: its loops).
MIN_PART_ROWS = 256


@dataclass(frozen=True)
class Estimates:
    """Per query: scores, their sd and interval per category (columns in the scorer's order), and the
    domain check. ``level`` is the intervals' coverage (None: no intervals, ``lo``/``hi`` NaN)."""

    scores: np.ndarray  # (m, categories)
    sd: np.ndarray  # (m, categories)
    best_similarity: np.ndarray  # (m,)
    out_of_domain: np.ndarray  # (m,) bool
    in_survey: np.ndarray  # (m,) bool
    lo: np.ndarray  # (m, categories)
    hi: np.ndarray  # (m, categories)
    dissimilarity: np.ndarray  # (m,)
    level: float | None = None

    @classmethod
    def empty(cls, m: int, width: int, in_survey: np.ndarray, level: float | None) -> Estimates:
        """Estimates of ``m`` queries with nothing known yet (NaN, not out of domain)."""
        return cls(np.full((m, width), np.nan), np.full((m, width), np.nan), np.full(m, np.nan),
                   np.zeros(m, dtype=bool), in_survey, np.full((m, width), np.nan), np.full((m, width), np.nan),
                   np.full(m, np.nan), level)

    def fill(self, rows: np.ndarray, other: Estimates) -> None:
        """Copy ``other`` (estimates of the queries at ``rows``) into these."""
        for name in ("scores", "sd", "best_similarity", "out_of_domain", "lo", "hi", "dissimilarity"):
            getattr(self, name)[rows] = getattr(other, name)


def neighbour_statistics(found: Neighbours, counts: np.ndarray, scores: np.ndarray,
                         weighting: str) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and sd of ``scores`` over each row's first ``counts`` neighbours (NaN for none)."""
    mean = np.full(len(counts), np.nan)
    sd = np.full(len(counts), np.nan)
    for count in np.unique(counts):
        if count == 0:
            continue
        matching = np.flatnonzero(counts == count)
        # every row: a slice, so that the reads below are views, not copies
        rows: np.ndarray | slice = slice(None) if len(matching) == len(counts) else matching
        weights = neighbour_weights(found.similarity[rows, :count], weighting)
        values = scores[found.index[rows, :count]]
        sums = np.sum(weights * values, axis=1)
        mean[rows], sd[rows] = sums, weighted_sd(values, weights, sums)
    return mean, sd


def interval_level(model: ExportedModel, level: float | None) -> float | None:
    """The interval level to use: ``level`` (0: none), or by default 0.9 where the model is calibrated.

    Asking a level of a model without a calibration is an error.
    """
    if level is None:
        return DEFAULT_LEVEL if model.calibration else None
    level = check_level(level)
    if level and not model.calibration:
        raise PerceptError("this model file holds no interval calibration: re-export it with "
                           "'percept evaluate --export' or 'clip_retrieval_knn --export', or use --interval 0")
    return level or None


class Estimator:
    """Scores with uncertainty from a :class:`MultiScorer`; ``image_key`` maps a survey image name to
    the key queries are named by (default: the name itself). ``interval`` is the prediction intervals'
    level (None: 0.9 where the model is calibrated; 0: none)."""

    def __init__(self, model: ExportedModel, k: int | None = None, image_key: Callable[[str], str] = str,
                 scorer: MultiScorer | None = None, interval: float | None = None):
        self.model = model
        self.scorer = scorer or MultiScorer(model, k=k)
        self.threshold = model.domain_threshold
        self.level = interval_level(model, interval)
        self.keys = image_keys(model.images, {c: len(model.scores[c]) for c in self.categories}, image_key)
        self._scores = {c: np.asarray(model.scores[c], dtype=np.float64) for c in self.categories}
        self._wide: MultiScorer | None = None
        self._first: dict[int, list[tuple[str, int]]] | None = None

    @property
    def categories(self) -> list[str]:
        return self.scorer.categories

    def in_survey(self, keys: Sequence[str]) -> np.ndarray:
        """True for query keys that name a survey image of the model."""
        return self.keys.lookup(keys) >= 0

    def estimate(self, queries: Rows, keys: Sequence[str] | None = None,
                 include_self: bool = False) -> Estimates:
        """Estimates for unit query vectors (float64 rows, or :class:`UnitRows`); queries whose ``keys`` name survey
        images are left out of their own neighbours unless ``include_self``."""
        numbers = self.keys.lookup(keys) if keys is not None else np.full(len(queries), -1, dtype=np.int64)
        survey = numbers >= 0
        out = self._empty(len(queries), survey)
        own = survey if not include_self else np.zeros(len(queries), dtype=bool)
        if own.any():
            self._fill(out, np.flatnonzero(~own), queries[~own])
            self._fill_left_out(out, np.flatnonzero(own), queries[own], numbers[own])
        else:
            self._fill(out, slice(None), queries)  # every query: no copy
        if include_self and survey.any():
            self._own_vectors(out, queries, numbers)
        return out

    def _own_vectors(self, out: Estimates, queries: Rows, numbers: np.ndarray) -> None:
        """Survey images scored with their own samples whose vector is their sample's, bit for bit, are at
        similarity exactly 1 from the survey (the float64 sum of a unit vector's squares is 1 to a few ulp)."""
        first = self._first_samples()
        for row in np.flatnonzero(numbers >= 0):
            if any(np.array_equal(self.model.vectors[category][sample], queries[row])
                   for category, sample in first.get(int(numbers[row]), ())):
                out.best_similarity[row] = 1.0
                out.dissimilarity[row] = 0.0
                out.out_of_domain[row] = False

    def _first_samples(self) -> dict[int, list[tuple[str, int]]]:
        """Each survey image's (category, first sample) pairs, by key number (made once)."""
        if self._first is None:
            self._first = {}
            for category in self.categories:
                numbers, samples = np.unique(self.keys.samples[category], return_index=True)
                for number, sample in zip(numbers.tolist(), samples.tolist()):
                    if number >= 0:
                        self._first.setdefault(number, []).append((category, sample))
        return self._first

    def _empty(self, m: int, survey: np.ndarray) -> Estimates:
        return Estimates.empty(m, len(self.categories), survey, self.level)

    def _fill(self, out: Estimates, rows: np.ndarray | slice, queries: Rows) -> None:
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
                self._interval(out, where, column, hits.similarity[:, 0] if hits.similarity.shape[1] else None)

        parts = _row_parts(len(queries))
        if len(parts) > 1:
            on_workers(fill, parts)
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
            first = np.where(counts[category] > 0, found[category].similarity[:, 0], np.nan) \
                if found[category].similarity.shape[1] else None
            self._interval(out, rows, column, first)
        self._domain(out, rows, found, counts)

    def _interval(self, out: Estimates, rows: np.ndarray | slice, column: int, nearest: np.ndarray | None) -> None:
        """The interval of one category's predictions at ``rows``; ``nearest``: each query's best
        similarity to that category's samples."""
        category = self.categories[column]
        fitted = (self.model.calibration or {}).get(category)
        if self.level is None or fitted is None or nearest is None:
            return
        far = dissimilarity(nearest, self.model.mean_distance)
        out.lo[rows, column], out.hi[rows, column] = interval(out.scores[rows, column], out.sd[rows, column], far,
                                                              fitted, self.level)

    def _domain(self, out: Estimates, rows: np.ndarray | slice, found: dict[str, Neighbours],
                counts: dict[str, np.ndarray]) -> None:
        best = best_similarity([found[c] for c in self.categories], [counts[c] for c in self.categories])
        out.best_similarity[rows] = best
        out.out_of_domain[rows] = is_out_of_domain(best, self.threshold)
        out.dissimilarity[rows] = dissimilarity(best, self.model.mean_distance)

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

