"""Nested cross-validation of the KNN model: K chosen inside each training part, scored outside it.

Ordinary cross-validation reports the best K's own folds, so the choice of K has
seen the test samples and the score is optimistic. Here every outer fold (the
folds of :func:`percept.study.crossval.repeat_folds`, whole groups per fold)
chooses K by an inner grouped K-fold cross-validation of its training part alone
(lowest mean inner MSE over the inner folds, ties to the smaller K) and scores that K
on its test fold. Inner folds deal whole groups of the same ``--group-by``
grouping, from ``(seed, repeat, outer fold)``.

Each category's neighbour lists (:mod:`percept.model.neighbour_lists`) are searched
once, long enough for an inner training part, and filtered to the training part of
every inner and outer fold, so results equal fitting ``KNNRegressor`` on each part.

Intervals (:func:`metric_intervals`, also for ordinary cross-validation) come from a
cluster bootstrap over the cross-validation groups (:mod:`percept.study.bootstrap`):
images or blocks, single samples when ungrouped; never single ratings of a grouped
image. The statistic is each repeat's MSE or R² of the pooled out-of-fold
predictions, averaged over repeats (averaging the predictions instead would score an
ensemble of the repeats' models, which no fold fitted).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from percept.data.survey import Samples
from percept.errors import PerceptError
from percept.model.knn import weighted_mean
from percept.model.neighbour_lists import NeighbourLists, fold_neighbours, list_length, neighbour_lists
from percept.model.unit_rows import Rows
from percept.model.weighting import DEFAULT_WEIGHTING, check_weighting
from percept.study.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_intervals
from percept.study.crossval import CVPlan, assign_folds, sample_folds
from percept.study.folds import sample_groups
from percept.study.holdout import regression_metrics

#: Metrics given an interval.
INTERVAL_METRICS = ("mse", "r2")
#: Random stream (beside seed, repeat and outer fold) of the inner folds.
INNER_STREAM = 11
#: A resample whose observed values spread less than this share of their squares counts as constant (R² as
#: for a constant target).
CONSTANT_TOLERANCE = 1e-12


@dataclass
class NestedResult:
    """Nested cross-validation of one category.

    Per outer fold (arrays of shape (repeats, folds)): ``chosen_k``, the K the inner
    cross-validation chose, and ``outer_mse`` / ``outer_r2``, that K's scores on the
    outer test fold; ``inner_mse`` (repeats, folds, len(ks)) holds every K's mean inner
    MSE. ``predicted`` (repeats, samples) holds the out-of-fold predictions (each sample
    by its outer fold's chosen K), ``folds`` (repeats, samples) the outer fold of each
    sample and ``groups`` (samples,) its cross-validation group (the bootstrap's unit),
    all aligned with ``observed`` and ``sample_rows`` (vector rows). ``pooled`` holds the
    statistics of the pooled predictions and ``intervals`` their bootstrap intervals.
    """

    category: str
    ks: list[int]
    chosen_k: np.ndarray
    inner_mse: np.ndarray
    outer_mse: np.ndarray
    outer_r2: np.ndarray
    observed: np.ndarray
    predicted: np.ndarray
    folds: np.ndarray
    groups: np.ndarray
    sample_rows: np.ndarray
    pooled: dict[str, float]
    intervals: dict[str, tuple[float, float]]

    @property
    def n_samples(self) -> int:
        return len(self.observed)

    @property
    def k_counts(self) -> dict[int, int]:
        """How many outer folds chose each K of the grid (zero counts included)."""
        return {k: int(np.sum(self.chosen_k == k)) for k in self.ks}

    @property
    def smallest_chosen(self) -> int:
        """Outer folds that chose the grid's smallest K."""
        return self.k_counts[self.ks[0]]

    @property
    def largest_chosen(self) -> int:
        """Outer folds that chose the grid's largest K."""
        return self.k_counts[self.ks[-1]]

    @property
    def edge_chosen(self) -> bool:
        """True when a fold chose the smallest or largest K: the best K may lie outside the grid."""
        return len(self.ks) > 1 and self.smallest_chosen + self.largest_chosen > 0

    @property
    def edge_majority(self) -> bool:
        """True when the smallest or the largest K was chosen in more than half of the outer folds."""
        half = self.chosen_k.size / 2
        return len(self.ks) > 1 and (self.smallest_chosen > half or self.largest_chosen > half)

    def mean(self, metric: str) -> float:
        """Mean over outer folds of ``mse`` or ``r2`` (finite values)."""
        values = self._outer(metric)
        return float(np.mean(values)) if len(values) else float("nan")

    def std(self, metric: str) -> float:
        """Sample standard deviation over outer folds (ddof=1; 0 for one fold)."""
        values = self._outer(metric)
        return float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if len(values) else float("nan"))

    def _outer(self, metric: str) -> np.ndarray:
        values = {"mse": self.outer_mse, "r2": self.outer_r2}[metric].ravel()
        return values[np.isfinite(values)]


# ---------------------------------------------------------------- intervals


def pooled_metrics(observed: np.ndarray, predicted_repeats: np.ndarray) -> dict[str, float]:
    """Each repeat's MSE and R² of its out-of-fold predictions (repeats, samples), averaged over repeats."""
    observed, predicted = _checked(observed, predicted_repeats)
    sums = _GroupSums(observed, predicted, np.arange(len(observed)), len(observed))
    values = sums.metrics(np.ones((1, len(observed))))[0]
    return {metric: float(v) for metric, v in zip(INTERVAL_METRICS, values)}


def metric_intervals(observed: np.ndarray, predicted_repeats: np.ndarray, groups: np.ndarray | None = None,
                     seed: int = 0, resamples: int = DEFAULT_RESAMPLES,
                     level: float = DEFAULT_LEVEL) -> dict[str, tuple[float, float]]:
    """Cluster-bootstrap intervals of :func:`pooled_metrics`: ``{"mse": (lo, hi), "r2": (lo, hi)}``.

    ``predicted_repeats`` (repeats, samples) or (samples,) holds out-of-fold predictions;
    ``groups`` (samples,) the cross-validation group of each sample (e.g.
    :func:`percept.study.folds.sample_groups`), None for single samples. Whole groups are
    resampled with replacement, ``resamples`` times from ``seed``.
    """
    observed, predicted = _checked(observed, predicted_repeats)
    if groups is None:
        group_of, n_groups = np.arange(len(observed)), len(observed)
    else:
        groups = np.asarray(groups)
        if groups.shape != observed.shape:
            raise PerceptError(f"{len(groups)} group labels for {len(observed)} samples")
        group_of = np.unique(groups, return_inverse=True)[1].ravel()
        n_groups = int(group_of.max()) + 1 if len(group_of) else 0
    sums = _GroupSums(observed, predicted, group_of, n_groups)
    bounds = bootstrap_intervals(sums.metrics, n_groups, seed, resamples, level)
    return {metric: (float(lo), float(hi)) for metric, (lo, hi) in zip(INTERVAL_METRICS, bounds)}


def _checked(observed, predicted_repeats) -> tuple[np.ndarray, np.ndarray]:
    observed = np.asarray(observed, dtype=np.float64)
    predicted = np.atleast_2d(np.asarray(predicted_repeats, dtype=np.float64))
    if predicted.shape[1] != len(observed):
        raise PerceptError(f"{predicted.shape[1]} predictions per repeat for {len(observed)} observed scores")
    if not (np.isfinite(observed).all() and np.isfinite(predicted).all()):
        raise PerceptError("the out-of-fold predictions or scores hold NaN or infinite values: every sample needs "
                           "a prediction in every repeat")
    return observed, predicted


class _GroupSums:
    """Per-group sums from which any resample's MSE and R² follow (observed values centred)."""

    def __init__(self, observed: np.ndarray, predicted: np.ndarray, group_of: np.ndarray, n_groups: int):
        centred = observed - observed.mean() if len(observed) else observed
        self.count = np.bincount(group_of, minlength=n_groups).astype(np.float64)
        self.total = np.bincount(group_of, weights=centred, minlength=n_groups)
        self.square = np.bincount(group_of, weights=centred * centred, minlength=n_groups)
        self.residual = np.stack([np.bincount(group_of, weights=(observed - p) ** 2, minlength=n_groups)
                                  for p in predicted], axis=1)  # (groups, repeats)

    def metrics(self, weights: np.ndarray) -> np.ndarray:
        """(resamples, 2): MSE and R² averaged over repeats, for each row of group weights."""
        n = weights @ self.count
        sse = weights @ self.residual
        square = weights @ self.square
        with np.errstate(invalid="ignore", divide="ignore"):
            mse = sse / n[:, None]
            spread = (square - (weights @ self.total) ** 2 / n)[:, None]
            constant = spread <= CONSTANT_TOLERANCE * square[:, None]
            r2 = np.where(constant, np.where(sse == 0.0, 1.0, 0.0), 1.0 - sse / spread)
        r2[n < 2] = np.nan
        return np.stack([mse.mean(axis=1), r2.mean(axis=1)], axis=1)


# ---------------------------------------------------------------- inner folds


def inner_folds_of(samples: Samples, groups: np.ndarray | None, train: np.ndarray, inner: int, plan: CVPlan,
                   repeat: int, outer_fold: int) -> np.ndarray:
    """Inner fold (0..inner-1) of each training sample ``train`` (positions, ascending) of one outer fold.

    Whole groups (``groups`` as for :func:`percept.study.crossval.sample_folds`, None for
    single samples) are dealt round-robin in a random order from
    ``(plan.seed, repeat, outer_fold)``; stratified plans balance ``int`` of the score
    (of a group's mean score), as the outer folds do.
    """
    scores = np.asarray(samples.scores, dtype=np.float64)[train]
    rng = np.random.default_rng([plan.seed, repeat, outer_fold, INNER_STREAM])
    if groups is None:
        units, unit_of = len(train), np.arange(len(train))
        strata = np.floor(scores) if plan.stratified else None
    else:
        unit_of = np.unique(np.asarray(groups)[train], return_inverse=True)[1].ravel()
        units = int(unit_of.max()) + 1 if len(unit_of) else 0
        strata = None
        if plan.stratified:
            strata = np.floor(np.bincount(unit_of, weights=scores) / np.bincount(unit_of))
    if units < inner:
        unit = "samples" if groups is None else f"groups ({plan.group_by.label})"
        raise PerceptError(f"nested cross-validation cannot make {inner} inner folds from the {units} {unit} of an "
                           "outer training part: use fewer inner folds or --cv folds, group less coarsely "
                           "(--group-by) or use more data")
    return assign_folds(units, inner, rng, strata)[unit_of]


# ---------------------------------------------------------------- nested cross-validation


def nested_cross_validate(vectors: Rows, samples: dict[str, Samples], ks: list[int], plan: CVPlan,
                          weighting: str = DEFAULT_WEIGHTING, lonlat: np.ndarray | None = None,
                          inner_folds: int | None = None, *, resamples: int = DEFAULT_RESAMPLES,
                          progress: Callable[[list], Iterable] = iter) -> list[NestedResult]:
    """Nested cross-validation of every category with samples, K chosen from ``ks`` in each outer fold.

    ``inner_folds`` (default: ``plan.folds``) inner folds per outer training part;
    ``lonlat`` (vector rows, 2) places the images for location and block grouping;
    ``progress`` wraps the list of categories (e.g. a progress bar). Intervals use
    ``resamples`` cluster resamples from ``plan.seed``.
    """
    weighting = check_weighting(weighting)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise PerceptError("K values must be positive whole numbers")
    inner = plan.folds if inner_folds is None else int(inner_folds)
    if inner < 2:
        raise PerceptError(f"nested cross-validation needs at least 2 inner folds, got {inner}")
    vectors = np.asarray(vectors)
    categories = [c for c, s in samples.items() if len(s)]
    if not categories:
        raise PerceptError("no category has samples to cross-validate")
    length = list_length(max(ks), plan.folds * inner / (plan.folds + inner - 1))  # inner training share
    searched: list[tuple[np.ndarray, NeighbourLists]] = []
    results = []
    for category in progress(categories):
        lists = _lists_for(searched, vectors, samples[category].rows, length)
        results.append(_nested_category(vectors, lists, category, samples[category], ks, plan, weighting, lonlat,
                                        inner, resamples))
    return results


def _lists_for(known: list[tuple[np.ndarray, NeighbourLists]], vectors, rows, length: int) -> NeighbourLists:
    """Neighbour lists of ``rows``, reused when a category with the same rows was searched before."""
    for known_rows, lists in known:
        if np.array_equal(known_rows, rows):
            return lists
    known.append((rows, neighbour_lists(vectors, rows, length)))
    return known[-1][1]


def _nested_category(vectors, lists, category, samples: Samples, ks, plan, weighting, lonlat, inner,
                     resamples) -> NestedResult:
    rows, scores = samples.rows, np.asarray(samples.scores, dtype=np.float64)
    groups = sample_groups(plan.group_by, rows, lonlat)
    shape = (plan.repeats, plan.folds)
    chosen, outer_mse, outer_r2 = np.zeros(shape, dtype=np.int64), np.zeros(shape), np.zeros(shape)
    inner_mse = np.zeros((*shape, len(ks)))
    predicted = np.full((plan.repeats, len(rows)), np.nan)
    folds = np.zeros((plan.repeats, len(rows)), dtype=np.int64)
    for repeat in range(plan.repeats):
        fold_of = sample_folds(samples, plan, repeat, groups)
        folds[repeat] = fold_of
        for fold in range(plan.folds):
            train, test = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
            inner_of = inner_folds_of(samples, groups, train, inner, plan, repeat, fold)
            for part in range(inner):
                part_train, part_test = train[inner_of != part], train[inner_of == part]
                guess = _predict(lists, vectors, rows, scores, part_train, part_test, ks, weighting)
                inner_mse[repeat, fold] += np.mean((guess - scores[part_test]) ** 2, axis=1) / inner
            best = int(np.argmin(inner_mse[repeat, fold]))  # the first of equal errors: the smaller K
            chosen[repeat, fold] = ks[best]
            guess = _predict(lists, vectors, rows, scores, train, test, [ks[best]], weighting)[0]
            predicted[repeat, test] = guess
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outer_mse[repeat, fold], outer_r2[repeat, fold] = regression_metrics(scores[test], guess)
    group_ids = np.arange(len(rows)) if groups is None else groups
    return NestedResult(category, ks, chosen, inner_mse, outer_mse, outer_r2, scores.copy(), predicted, folds,
                        group_ids, rows, pooled_metrics(scores, predicted),
                        metric_intervals(scores, predicted, group_ids, plan.seed, resamples))


def _predict(lists, vectors, rows, scores, train, test, ks, weighting) -> np.ndarray:
    """(len(ks), test samples) predictions from the neighbour lists filtered to ``train``."""
    query_vectors, inverse = np.unique(lists.vector_of[test], return_inverse=True)
    found = fold_neighbours(lists, vectors, rows, train, query_vectors, max(ks))
    return np.stack([weighted_mean(found, scores, k, weighting)[inverse.ravel()] for k in ks])
