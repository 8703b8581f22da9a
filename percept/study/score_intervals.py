"""95 % intervals for every cross-validated MSE and R²: a cluster bootstrap over the folds' groups.

Each category's and K's out-of-fold predictions (every repeat) are scored pooled, and resampled by
the groups the folds were dealt in (images, blocks, a survey property; single samples when
ungrouped), never by single ratings (:func:`percept.study.nested.metric_intervals`).
"""

from __future__ import annotations

import numpy as np

from percept.study.crossval import CategoryResult, CVPlan
from percept.study.folds import sample_groups
from percept.study.nested import metric_intervals, pooled_metrics


def score_intervals(results: list[CategoryResult], plan: CVPlan,
                    lonlat: np.ndarray | None = None) -> dict[str, dict[int, dict]]:
    """Per category and K: pooled ``mse`` and ``r2`` with their 95 % intervals ``mse_ci`` and ``r2_ci``."""
    out: dict[str, dict[int, dict]] = {}
    for result in results:
        groups = sample_groups(plan.group_by, result.sample_rows, lonlat)
        out[result.category] = {}
        for k, predicted in result.predicted.items():
            pooled = pooled_metrics(result.observed, predicted)
            bounds = metric_intervals(result.observed, predicted, groups, plan.seed)
            out[result.category][k] = {"mse": pooled["mse"], "mse_ci": bounds["mse"], "r2": pooled["r2"],
                                       "r2_ci": bounds["r2"]}
    return out
