"""Words for the cross-validation report: a plain-language summary per category, and calibration bins.

No I/O and no plotting: numbers in, sentences and arrays out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from percept.study.crossval import CategoryResult, ModelScores

#: Width of the calibration bins, in score points.
CALIBRATION_BIN = 0.25
MODEL_NAMES = {"mean": "the training-mean baseline", "ridge": "the ridge linear probe"}


@dataclass(frozen=True)
class Comparison:
    """KNN at the best K against one baseline, fold by fold (the folds are shared)."""

    baseline: str
    knn_mse: float
    other_mse: float
    difference: float  # mean over folds of (baseline MSE - KNN MSE); positive: KNN better
    difference_sd: float
    knn_wins: int  # folds where KNN's MSE is lower
    folds: int

    @property
    def relative(self) -> float:
        """The mean MSE difference as a share of the baseline's mean MSE."""
        return self.difference / self.other_mse if self.other_mse else float("nan")


def compare(best: ModelScores, other: ModelScores) -> Comparison:
    """Paired comparison of MSE over the folds both models were scored on."""
    knn, base = np.asarray(best.folds["mse"], float), np.asarray(other.folds["mse"], float)
    diff = base - knn
    return Comparison(other.model, float(np.mean(knn)), float(np.mean(base)), float(np.mean(diff)),
                      float(np.std(diff, ddof=1)) if len(diff) > 1 else 0.0, int(np.sum(diff > 0)), len(diff))


def category_summary(result: CategoryResult) -> str:
    """A few sentences: the best K, its error, and how KNN compares with each baseline."""
    best = next(r for r in result.knn if r.best)
    folds = len(best.folds["mse"])
    ks = [r.k for r in result.knn if r.k is not None]  # every KNN row has its K
    edge = ""
    if len(ks) > 1 and best.k in (min(ks), max(ks)):
        edge = f" (the {'largest' if best.k == max(ks) else 'smallest'} K tried, so a K beyond it may do better)"
    parts = [(f"{result.category.capitalize()} ({result.n_samples} samples): the best K is {best.k}{edge}, with a "
              f"mean squared error of {best.mean('mse'):.3f} ± {best.std('mse'):.3f} and R² of "
              f"{_number(best.mean('r2'))} ± {_number(best.std('r2'))} (mean ± sd over {folds} folds).")]
    for model in ("ridge", "mean"):
        other = result.baseline(model)
        if other is not None:
            parts.append(comparison_sentence(compare(best, other)))
    return " ".join(parts)


def comparison_sentence(c: Comparison) -> str:
    name = MODEL_NAMES.get(c.baseline, c.baseline)
    if not math.isfinite(c.difference):
        return f"It could not be compared with {name}."
    better = "KNN is better than" if c.difference > 0 else "KNN is worse than"
    size = abs(c.difference)
    clear = abs(c.difference) > c.difference_sd
    verdict = "" if clear else " — a difference smaller than its spread over folds, so not a clear one"
    return (f"{better} {name} (MSE {c.other_mse:.3f}) by {size:.3f} MSE ({abs(c.relative) * 100:.0f} % "
            f"{'lower' if c.difference > 0 else 'higher'} error; ± {c.difference_sd:.3f} over folds, KNN lower in "
            f"{c.knn_wins} of {c.folds} folds){verdict}.")


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3f}"


@dataclass(frozen=True)
class CalibrationBins:
    """Predictions binned by predicted score: per bin the mean prediction, mean observed, its SE and count."""

    predicted: np.ndarray
    observed: np.ndarray
    standard_error: np.ndarray
    count: np.ndarray


def calibration_bins(observed: np.ndarray, predicted: np.ndarray, width: float = CALIBRATION_BIN) -> CalibrationBins:
    """Bins of ``width`` score points over the predictions (NaN predictions left out); empty bins dropped."""
    observed, predicted = np.ravel(observed).astype(float), np.ravel(predicted).astype(float)
    keep = np.isfinite(observed) & np.isfinite(predicted)
    observed, predicted = observed[keep], predicted[keep]
    if not len(predicted):
        empty = np.array([])
        return CalibrationBins(empty, empty, empty, np.array([], dtype=np.int64))
    index = np.floor(predicted / width).astype(np.int64)
    _, bin_of = np.unique(index, return_inverse=True)
    count = np.bincount(bin_of)
    mean_pred = np.bincount(bin_of, weights=predicted) / count
    mean_obs = np.bincount(bin_of, weights=observed) / count
    square = np.bincount(bin_of, weights=observed * observed) / count
    variance = np.maximum(square - mean_obs ** 2, 0.0) * count / np.maximum(count - 1, 1)
    return CalibrationBins(mean_pred, mean_obs, np.sqrt(variance / count), count)
