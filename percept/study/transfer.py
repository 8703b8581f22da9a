"""Another city: a model trained on one survey, scored on another survey's images and ratings.

Per category: MSE and R² of the model's scores against the other survey's scores, how often the
prediction intervals covered them, and the share of the other survey's samples that lie outside
the training survey's domain. Images the two surveys share are scored without their own samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from percept.data.survey import image_names
from percept.model.estimates import Estimator
from percept.model.io import ExportedModel
from percept.study.dataset import Dataset
from percept.study.holdout import regression_metrics


@dataclass(frozen=True)
class TransferScores:
    """One category of the other survey."""

    samples: int
    mse: float
    r2: float
    coverage: float  # NaN without intervals
    mean_width: float
    out_of_domain: float  # share of the samples

    def as_dict(self) -> dict:
        return asdict(self)


def score_other_survey(model: ExportedModel, other: Dataset, level: float | None = None) -> dict[str, TransferScores]:
    """Score every sample of ``other`` with ``model`` (intervals at ``level``, default 0.9 where calibrated)."""
    samples = {c: s for c, s in other.samples.items() if len(s) and c in model.vectors}
    if not samples:
        return {}
    rows = np.unique(np.concatenate([s.rows for s in samples.values()]))
    estimator = Estimator(model, interval=level)
    found = estimator.estimate(np.asarray(other.vectors[rows], dtype=np.float64),
                               image_names([other.names[r] for r in rows]))
    column = {c: i for i, c in enumerate(estimator.categories)}
    out = {}
    for category, part in samples.items():
        at = np.searchsorted(rows, part.rows)
        predicted = found.scores[at, column[category]]
        mse, r2 = regression_metrics(part.scores, predicted)
        lo, hi = found.lo[at, column[category]], found.hi[at, column[category]]
        known = np.isfinite(lo)
        coverage = float(np.mean((lo <= part.scores) & (part.scores <= hi))) if known.all() else float("nan")
        width = float(np.mean(hi - lo)) if known.all() else float("nan")
        out[category] = TransferScores(len(part), mse, r2, coverage, width, float(found.out_of_domain[at].mean()))
    return out
