"""Do groups of raters perceive streets differently? Train on one group, test on another.

The samples are split once into a training and a test part (so no sample is
ever both, even within one group); a KNN model fitted on each group's training
samples predicts each group's test samples, giving a matrix of R² with the
sample counts behind every cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from percept.data.filters import in_netherlands
from percept.data.survey import Samples
from percept.errors import PerceptError
from percept.model.knn import KNNRegressor
from percept.model.weighting import DEFAULT_WEIGHTING
from percept.study.holdout import regression_metrics

COLUMNS = ("gender", "education", "region", "age")
DEFAULT_AGE_BINS = ((18, 29), (30, 49), (50, 120))
#: Share of the samples used for training; the rest is the test part.
TRAIN_FRACTION = 0.8


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
    """``r2[i, j]``: trained on group i's training samples, tested on group j's test samples."""

    category: str
    k: int
    groups: list[str]
    r2: np.ndarray
    n_train: np.ndarray  # per group (rows)
    n_test: np.ndarray  # per group (columns)


def compare_groups(vectors: np.ndarray, samples: Samples, labels: np.ndarray, k: int, category: str = "",
                   weighting: str = DEFAULT_WEIGHTING, seed: int = 0, group_by_image: bool = False) -> GroupMatrix:
    """The train-on-group x test-on-group R² matrix for one category.

    One random split (``TRAIN_FRACTION`` train) of all samples from ``seed``;
    with ``group_by_image`` all samples of an image fall on the same side.
    Cells whose training or test group is empty hold NaN.
    """
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(samples):
        raise PerceptError(f"{len(labels)} group labels for {len(samples)} samples")
    groups = sorted({g for g in labels if g is not None})
    if len(groups) < 2:
        raise PerceptError(f"--compare-groups found {len(groups)} group(s) among the {category or 'category'} "
                           "ratings; it needs at least two")
    in_train = _training_side(samples.rows, len(samples), seed, group_by_image)
    r2 = np.full((len(groups), len(groups)), np.nan)
    n_train = np.array([np.sum(in_train & (labels == g)) for g in groups])
    n_test = np.array([np.sum(~in_train & (labels == g)) for g in groups])
    for i, train_group in enumerate(groups):
        train = np.flatnonzero(in_train & (labels == train_group))
        if not len(train):
            continue
        model = KNNRegressor(k, weighting).fit(vectors, samples.scores[train], samples.rows[train])
        for j, test_group in enumerate(groups):
            test = np.flatnonzero(~in_train & (labels == test_group))
            if len(test):
                predicted = model.predict(vectors[samples.rows[test]])
                r2[i, j] = regression_metrics(samples.scores[test], predicted)[1]
    return GroupMatrix(category, k, groups, r2, n_train, n_test)


def _training_side(rows: np.ndarray, n: int, seed: int, group_by_image: bool) -> np.ndarray:
    """True for the samples in the training part."""
    rng = np.random.default_rng(seed)
    if not group_by_image:
        return rng.permutation(n) < int(n * TRAIN_FRACTION)
    images, member = np.unique(rows, return_inverse=True)
    return (rng.permutation(len(images)) < int(len(images) * TRAIN_FRACTION))[member]
