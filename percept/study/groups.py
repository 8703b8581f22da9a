"""Do groups of raters perceive streets differently? Train on one group, test on another.

Repeated K-fold cross-validation on the folds of ``percept evaluate`` (the same
``--group-by`` grouping, so no sample, image or block is on both sides): in every
fold a KNN model fitted on each group's training part predicts each group's test
part, giving matrices of MSE and R² (mean ± sd over folds) with the training and
test sizes behind every cell. Optionally every group's training part is
subsampled to the smallest group's, so group size does not confound the result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from percept.data.filters import in_netherlands
from percept.data.survey import Samples
from percept.errors import PerceptError
from percept.model.knn import KNNRegressor
from percept.model.weighting import DEFAULT_WEIGHTING
from percept.study.crossval import CVPlan, repeat_folds
from percept.study.holdout import regression_metrics

COLUMNS = ("gender", "education", "region", "age")
DEFAULT_AGE_BINS = ((18, 29), (30, 49), (50, 120))
#: Random stream (beside seed, repeat and fold) of the --equalise subsampling.
EQUALISE_STREAM = 7


@dataclass(frozen=True)
class GroupSpec:
    """Which demographic splits the raters: a column, and age bins for ``age``."""

    column: str
    age_bins: tuple[tuple[int, int], ...] = ()


def parse_group_spec(text: str) -> GroupSpec:
    """``gender``, ``education``, ``region`` or ``age[:18-29,30-49,50-120]``."""
    column, _, bins = text.partition(":")
    if column not in COLUMNS:
        raise PerceptError(f"--compare-groups takes one of {', '.join(COLUMNS)} (age may add bins, "
                           f"e.g. age:18-29,30-49,50-120), got {text!r}")
    if column != "age":
        if bins:
            raise PerceptError(f"--compare-groups {column} takes no ':' part, got {text!r}")
        return GroupSpec(column)
    if not bins:
        return GroupSpec("age", DEFAULT_AGE_BINS)
    parsed = []
    for part in bins.split(","):
        low, dash, high = part.partition("-")
        if not (dash and low.strip().isdigit() and high.strip().isdigit()) or int(low) > int(high):
            raise PerceptError(f"--compare-groups age bins look like 18-29,30-49,50-120, got {part!r}")
        parsed.append((int(low), int(high)))
    ordered = sorted(parsed)
    if any(a[1] >= b[0] for a, b in zip(ordered, ordered[1:])):
        raise PerceptError(f"--compare-groups age bins overlap: {bins!r}")
    return GroupSpec("age", tuple(parsed))


def group_labels(ratings: pd.DataFrame, spec: GroupSpec) -> np.ndarray:
    """Group name of each rating row (object array; None when the row belongs to no group).

    ``region`` follows the drop-in ``--region`` rule: NL when the country or the
    postal code looks Dutch, else non-NL.
    """
    if spec.column == "region":
        needed = ("country", "postalcode")
    else:
        needed = (spec.column,)
    missing = [c for c in needed if c not in ratings.columns]
    if missing:
        raise PerceptError(f"--compare-groups {spec.column} needs the demographics column(s) {', '.join(missing)}")
    if spec.column == "region":
        dutch = [in_netherlands(c, p) for c, p in zip(ratings["country"], ratings["postalcode"])]
        return np.array(["NL" if d else "non-NL" for d in dutch], dtype=object)
    if spec.column == "age":
        ages = pd.to_numeric(ratings["age"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        labels = np.full(len(ages), None, dtype=object)
        for low, high in spec.age_bins:
            labels[(ages >= low) & (ages <= high)] = f"{low}-{high}"
        return labels
    values = ratings[spec.column]
    return np.array([v if isinstance(v, str) and v else None for v in values], dtype=object)


@dataclass
class GroupMatrix:
    """Train on group i's training part, test on group j's test part, in every fold of every repeat.

    ``mse`` and ``r2`` are (groups, groups, folds x repeats); ``n_train`` (groups, folds x repeats)
    counts the training samples behind each row's cells, ``n_test`` (groups, folds x repeats)
    the test samples behind each column's.
    """

    category: str
    k: int
    groups: list[str]
    mse: np.ndarray
    r2: np.ndarray
    n_train: np.ndarray
    n_test: np.ndarray
    equalised: bool = False
    group_by: str = "none"

    @property
    def n_folds(self) -> int:
        return self.mse.shape[2]

    def mean(self, metric: str) -> np.ndarray:
        """(groups, groups) mean over folds of ``mse`` or ``r2`` (NaN where no fold had data)."""
        return _reduce(getattr(self, metric), np.nanmean)

    def std(self, metric: str) -> np.ndarray:
        """(groups, groups) sample standard deviation over folds (ddof=1; 0 for one fold)."""
        values = getattr(self, metric)
        if values.shape[2] < 2:
            return np.where(np.isfinite(self.mean(metric)), 0.0, np.nan)
        return _reduce(values, lambda v, axis: np.nanstd(v, axis=axis, ddof=1))

    def train_size(self) -> np.ndarray:
        """Mean training samples per fold of each row (training group)."""
        return self.n_train.mean(axis=1)

    def test_size(self) -> np.ndarray:
        """Mean test samples per fold of each column (test group)."""
        return self.n_test.mean(axis=1)


def _reduce(values: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` over the folds axis; all-NaN cells stay NaN without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reduce(values, axis=2)


def compare_groups(vectors: np.ndarray, samples: Samples, labels: np.ndarray, k: int, category: str = "",
                   weighting: str = DEFAULT_WEIGHTING, plan: CVPlan | None = None, equalise: bool = False,
                   lonlat: np.ndarray | None = None) -> GroupMatrix:
    """The train-on-group x test-on-group MSE and R² over the folds of ``plan`` for one category.

    The folds are those of ``percept evaluate``'s cross-validation (same seed, same
    ``plan.group_by`` grouping), so no sample, image or block is ever on both sides. With
    ``equalise`` every group's training part is subsampled, in each fold, to the smallest
    group's (seeded by the plan's seed, repeat and fold). Cells whose training or test
    part is empty in a fold hold NaN for that fold.
    """
    plan = plan or CVPlan()
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(samples):
        raise PerceptError(f"{len(labels)} group labels for {len(samples)} samples")
    groups = sorted({g for g in labels if g is not None})
    if len(groups) < 2:
        raise PerceptError(f"--compare-groups found {len(groups)} group(s) among the {category or 'category'} "
                           "ratings; it needs at least two")
    member = np.array([groups.index(g) if g is not None else -1 for g in labels])
    runs = plan.folds * plan.repeats
    mse, r2 = np.full((len(groups), len(groups), runs), np.nan), np.full((len(groups), len(groups), runs), np.nan)
    n_train, n_test = np.zeros((len(groups), runs), dtype=np.int64), np.zeros((len(groups), runs), dtype=np.int64)
    for repeat, fold_of in enumerate(repeat_folds(samples, plan, lonlat)):
        for fold in range(plan.folds):
            run = repeat * plan.folds + fold
            trains = [np.flatnonzero((fold_of != fold) & (member == i)) for i in range(len(groups))]
            if equalise:
                rng = np.random.default_rng([plan.seed, repeat, fold, EQUALISE_STREAM])
                smallest = min(len(t) for t in trains)
                trains = [np.sort(rng.choice(t, smallest, replace=False)) for t in trains]
            tests = [np.flatnonzero((fold_of == fold) & (member == j)) for j in range(len(groups))]
            n_train[:, run] = [len(t) for t in trains]
            n_test[:, run] = [len(t) for t in tests]
            for i, train in enumerate(trains):
                if not len(train):
                    continue
                model = KNNRegressor(k, weighting).fit(vectors, samples.scores[train], samples.rows[train])
                for j, test in enumerate(tests):
                    if len(test):
                        predicted = model.predict(vectors[samples.rows[test]])
                        mse[i, j, run], r2[i, j, run] = regression_metrics(samples.scores[test], predicted)
    return GroupMatrix(category, k, groups, mse, r2, n_train, n_test, equalise, plan.group_by.label)
