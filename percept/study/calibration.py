"""Calibrating a model's prediction intervals on its own out-of-fold predictions.

Every sample of a category is predicted once by the model of the exported configuration (same K,
same weighting) trained on the other folds, with folds grouped as the evaluation grouped them
(``--group-by``: by image, location, spatial block or a survey property), so a calibration sample
stands to its training part as a new place stands to the survey. Each prediction keeps its
neighbours' weighted spread and its dissimilarity to the training part; these give the
nonconformity scores of :mod:`percept.model.conformal`.

The empirical coverage on the folds is measured the same way a user meets it: each fold's
intervals are calibrated on the other folds only, then checked against the fold's scores, in and
out of the survey's domain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from percept.data.survey import Samples
from percept.model.conformal import DEFAULT_LEVEL, Calibration, calibrate, interval
from percept.model.domain import SurveyDomain, dissimilarity
from percept.model.estimates import neighbour_statistics
from percept.model.knn import Neighbours
from percept.model.neighbour_lists import fold_neighbours, list_length, neighbour_lists
from percept.study.crossval import CVPlan, sample_folds
from percept.study.folds import sample_groups


@dataclass(frozen=True)
class OutOfFold:
    """One category's out-of-fold predictions of the exported configuration, per sample."""

    observed: np.ndarray
    predicted: np.ndarray
    sd: np.ndarray
    dissimilarity: np.ndarray
    out_of_domain: np.ndarray  # best similarity to the training part below the survey's threshold
    fold: np.ndarray


@dataclass(frozen=True)
class Coverage:
    """How often the intervals covered the observed score on the folds, in and out of the domain."""

    level: float
    covered: int
    total: int
    covered_in: int
    total_in: int
    covered_out: int
    total_out: int
    mean_width: float
    mean_width_in: float
    mean_width_out: float

    @staticmethod
    def share(covered: int, total: int) -> float:
        return covered / total if total else float("nan")

    def as_dict(self) -> dict:
        return {"level": self.level, "coverage": self.share(self.covered, self.total), "samples": self.total,
                "coverage_in_domain": self.share(self.covered_in, self.total_in), "samples_in_domain": self.total_in,
                "coverage_out_of_domain": self.share(self.covered_out, self.total_out),
                "samples_out_of_domain": self.total_out, "mean_width": self.mean_width,
                "mean_width_in_domain": self.mean_width_in, "mean_width_out_of_domain": self.mean_width_out}


@dataclass(frozen=True)
class CalibrationResult:
    """Per category: the calibration to store in the model, the out-of-fold predictions and the coverage."""

    calibration: dict[str, Calibration]
    out_of_fold: dict[str, OutOfFold]
    coverage: dict[str, Coverage]
    plan: CVPlan

    def describe(self) -> dict:
        """How the calibration folds were made, for the model's settings."""
        return {"folds": self.plan.folds, "group_by": self.plan.group_by.label, "seed": self.plan.seed,
                "samples": {c: len(o.observed) for c, o in self.out_of_fold.items()},
                "beta": {c: fitted.beta for c, fitted in self.calibration.items()}}


def out_of_fold(vectors, samples: Samples, folds: np.ndarray, k: int, weighting: str,
                domain: SurveyDomain | None) -> OutOfFold:
    """Each sample predicted from the other folds' samples with K neighbours, with spread and dissimilarity."""
    rows, scores = samples.rows, np.asarray(samples.scores, dtype=np.float64)
    n_folds = int(folds.max()) + 1
    lists = neighbour_lists(vectors, rows, min(len(rows), list_length(k, n_folds)))
    predicted, sd, best = (np.full(len(rows), np.nan) for _ in range(3))
    for fold in range(n_folds):
        test = np.flatnonzero(folds == fold)
        train = np.flatnonzero(folds != fold)
        if not len(test) or not len(train):
            continue
        queries, inverse = np.unique(lists.vector_of[test], return_inverse=True)
        found = fold_neighbours(lists, vectors, rows, train, queries, k)
        hits = Neighbours(found.index, found.similarity)
        counts = np.full(len(queries), found.index.shape[1])
        mean, spread = neighbour_statistics(hits, counts, scores, weighting)
        predicted[test], sd[test], best[test] = mean[inverse], spread[inverse], found.similarity[inverse, 0]
    far = dissimilarity(best, domain.mean_distance if domain else None)
    with np.errstate(invalid="ignore"):
        outside = best < domain.threshold if domain else np.zeros(len(rows), dtype=bool)
    return OutOfFold(scores, predicted, sd, far, outside, folds)


def fold_coverage(oof: OutOfFold, level: float = DEFAULT_LEVEL) -> Coverage:
    """Coverage of each fold's intervals calibrated on the other folds only."""
    covered = np.zeros(len(oof.observed), dtype=bool)
    width = np.full(len(oof.observed), np.nan)
    for fold in np.unique(oof.fold):
        test, rest = oof.fold == fold, oof.fold != fold
        fitted = calibrate(oof.observed[rest], oof.predicted[rest], oof.sd[rest], oof.dissimilarity[rest])
        lo, hi = interval(oof.predicted[test], oof.sd[test], oof.dissimilarity[test], fitted, level)
        covered[test] = (lo <= oof.observed[test]) & (oof.observed[test] <= hi)
        width[test] = hi - lo
    inside = ~oof.out_of_domain

    def mean(values: np.ndarray) -> float:
        values = values[np.isfinite(values)]
        return float(values.mean()) if len(values) else float("nan")

    return Coverage(level, int(covered.sum()), len(covered), int(covered[inside].sum()), int(inside.sum()),
                    int(covered[~inside].sum()), int((~inside).sum()), mean(width), mean(width[inside]),
                    mean(width[~inside]))


def calibrate_model(vectors, samples: dict[str, Samples], k: int, weighting: str, plan: CVPlan,
                    domain: SurveyDomain | None, lonlat: np.ndarray | None = None, level: float = DEFAULT_LEVEL,
                    progress: Callable[[list], Iterable] = iter) -> CalibrationResult:
    """Calibrate every category with samples on one repeat of ``plan``'s grouped folds (fewer folds for a
    category with fewer groups than folds; none for a category of one group)."""
    plan = replace(plan, repeats=1)
    calibration, oof, coverage = {}, {}, {}
    for category in progress([c for c, s in samples.items() if len(s) > 1]):
        groups = sample_groups(plan.group_by, samples[category].rows, lonlat)
        count = len(samples[category]) if groups is None else int(groups.max()) + 1
        if count < 2:
            continue
        folds = sample_folds(samples[category], replace(plan, folds=min(plan.folds, count)), 0, groups)
        found = out_of_fold(vectors, samples[category], folds, k, weighting, domain)
        oof[category] = found
        calibration[category] = calibrate(found.observed, found.predicted, found.sd, found.dissimilarity)
        coverage[category] = fold_coverage(found, level)
    return CalibrationResult(calibration, oof, coverage, plan)
