"""Prediction intervals with a coverage guarantee: normalised split-conformal prediction.

A model is calibrated on out-of-fold predictions of its own samples (each sample predicted by a
model that did not see its fold). Each sample's nonconformity score is its absolute error over a
scale that says how hard the prediction was::

    scale = sd + beta * dissimilarity

``sd`` is the weighted spread of the K neighbours' scores (intervals widen where neighbours
disagree) and ``dissimilarity`` the query's distance to the nearest sample of the model over the
survey's mean nearest-neighbour distance (intervals widen away from the survey). ``beta`` weighs
the two so that each contributes the same at the calibration samples' medians.

For a level ``1 - alpha`` the interval is ``prediction ± q * scale`` with ``q`` the
``ceil((n + 1)(1 - alpha))``-th smallest of the ``n`` calibration scores (infinite when that
exceeds ``n``), clipped to the rating scale. When the calibration samples and a new query are
exchangeable, the interval covers the query's score with probability at least ``1 - alpha``
(Vovk et al. 2005; Lei et al. 2018). Folds grouped as the evaluation grouped them (by image,
or by spatial block) make new places, not only new raters of known images, exchangeable with
the calibration samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from percept.categories import SCORE_RANGE
from percept.errors import PerceptError

#: The interval level used when none is given.
DEFAULT_LEVEL = 0.9


@dataclass(frozen=True)
class Calibration:
    """One category's calibration: its sorted nonconformity scores and the scale's ``beta``."""

    scores: np.ndarray  # (n,) sorted ascending
    beta: float

    def quantile(self, level: float) -> float:
        """The conformal quantile for ``level``: the ceil((n+1) level)-th smallest score (inf past the end)."""
        rank = math.ceil((len(self.scores) + 1) * level - 1e-9)
        if rank > len(self.scores):
            return math.inf
        return float(self.scores[max(rank, 1) - 1])


def check_level(level: float) -> float:
    """An interval level: 0 (no intervals) or strictly between 0 and 1."""
    level = float(level)
    if not (level == 0 or 0 < level < 1):
        raise PerceptError(f"--interval takes a coverage level between 0 and 1 (e.g. 0.9), or 0 for none; "
                           f"got {level:g}")
    return level


def scale(sd: ArrayLike, dissimilarity: ArrayLike, beta: float) -> np.ndarray:
    """How hard each prediction is: the neighbours' spread plus ``beta`` times the dissimilarity."""
    sd = np.asarray(sd, dtype=np.float64)
    far = np.nan_to_num(np.asarray(dissimilarity, dtype=np.float64), nan=0.0)
    return sd + beta * far


def fit_beta(sd: np.ndarray, dissimilarity: np.ndarray) -> float:
    """``beta`` making both terms of the scale equal at the calibration samples' medians (0 if unusable)."""
    spread = float(np.nanmedian(sd)) if len(sd) else 0.0
    far = float(np.nanmedian(dissimilarity)) if len(dissimilarity) else 0.0
    if not far > 0 or not np.isfinite(far):
        return 0.0
    beta = (spread if spread > 0 else 1.0) / far
    return float(beta) if np.isfinite(beta) else 0.0


def nonconformity(observed: ArrayLike, predicted: ArrayLike, sd: ArrayLike, dissimilarity: ArrayLike,
                  beta: float) -> np.ndarray:
    """Absolute errors over their scale (0 for no error, inf for an error at zero scale)."""
    error = np.abs(np.asarray(observed, dtype=np.float64) - np.asarray(predicted, dtype=np.float64))
    size = scale(sd, dissimilarity, beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(error == 0, 0.0, error / size)
    return np.where(np.isnan(score), np.inf, score)


def calibrate(observed: ArrayLike, predicted: ArrayLike, sd: ArrayLike, dissimilarity: ArrayLike) -> Calibration:
    """A category's calibration from out-of-fold predictions with their spread and dissimilarity."""
    predicted = np.asarray(predicted, dtype=np.float64)
    usable = np.isfinite(predicted)
    spread, far = np.asarray(sd)[usable], np.asarray(dissimilarity)[usable]
    beta = fit_beta(spread, far)
    scores = nonconformity(np.asarray(observed)[usable], predicted[usable], spread, far, beta)
    return Calibration(np.sort(scores), beta)


def interval(predicted: ArrayLike, sd: ArrayLike, dissimilarity: ArrayLike, calibration: Calibration,
             level: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` prediction interval of each prediction, clipped to the rating scale (NaN where unknown)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    half = calibration.quantile(level) * scale(sd, dissimilarity, calibration.beta)
    low, high = SCORE_RANGE
    with np.errstate(invalid="ignore"):
        lo = np.clip(predicted - half, low, high)
        hi = np.clip(predicted + half, low, high)
    unknown = ~np.isfinite(predicted)
    lo[unknown] = hi[unknown] = np.nan
    return lo, hi
