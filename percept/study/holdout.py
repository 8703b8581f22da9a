"""Train/test splits with the original tool's random-state semantics, and the metrics."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from percept.errors import PerceptError
from percept.read_ahead import read_ahead

if TYPE_CHECKING:
    from percept.model.unit_rows import Rows

SCORE_BINS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Split:
    """Positions of the training and test samples, and per-bin counts for stratified splits."""

    train: np.ndarray
    test: np.ndarray
    train_counts: tuple[int, ...] | None = None
    test_counts: tuple[int, ...] | None = None

    def describe_counts(self) -> tuple[str, str]:
        """The train and test counts as the results log writes them (``a+b+c+d+e`` when stratified)."""
        if self.train_counts is None or self.test_counts is None:
            return str(len(self.train)), str(len(self.test))
        return "+".join(map(str, self.train_counts)), "+".join(map(str, self.test_counts))


def check_training_split(fraction: float) -> float:
    """Return ``fraction`` if it lies strictly between 0 and 1."""
    if not 0.0 < fraction < 1.0:
        raise PerceptError(f"--training-split must lie strictly between 0 and 1, got {fraction}")
    return fraction


def plain_split(n: int, fraction: float, rng: random.Random | None) -> Split:
    """First ``int(n * fraction)`` positions train, the rest test; shuffled first when ``rng`` is given."""
    order = list(range(n))
    if rng is not None:
        rng.shuffle(order)
    cut = int(n * fraction)
    return Split(np.array(order[:cut], dtype=np.int64), np.array(order[cut:], dtype=np.int64))


def stratified_split(scores: np.ndarray, fraction: float, rng: random.Random | None) -> Split:
    """Split each score bin (``int(score)`` = 1..5) on its own; scores outside the bins are dropped."""
    bins = np.asarray(scores, dtype=np.float64).astype(np.int64)
    train, test = [], []
    for b in SCORE_BINS:
        members = list(np.flatnonzero(bins == b))
        if rng is not None:
            rng.shuffle(members)
        cut = int(len(members) * fraction)
        train.append(members[:cut])
        test.append(members[cut:])
    return Split(
        np.array([i for part in train for i in part], dtype=np.int64),
        np.array([i for part in test for i in part], dtype=np.int64),
        tuple(len(p) for p in train),
        tuple(len(p) for p in test),
    )


def regression_metrics(observed: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Mean squared error and R², with scikit-learn's definitions (R² of a constant target: 1 if
    predicted exactly, else 0; of a single sample: NaN)."""
    observed = np.asarray(observed, dtype=np.float64)
    if len(observed) == 0:
        return float("nan"), float("nan")
    residual = float(np.sum((observed - np.asarray(predicted, dtype=np.float64)) ** 2))
    mse = residual / len(observed)
    if len(observed) < 2:
        return mse, float("nan")
    total = float(np.sum((observed - observed.mean()) ** 2))
    if total == 0.0:
        return mse, 1.0 if residual == 0.0 else 0.0
    return mse, 1.0 - residual / total


@dataclass(frozen=True)
class HoldoutResult:
    """Metrics of one category and K on one train/test split."""

    category: str
    k: int
    split: Split
    mse: float
    r2: float
    observed: np.ndarray
    predicted: np.ndarray


def holdout_evaluation(vectors: Rows, samples: dict, ks: list[int], fraction: float = 0.8,
                       rng: random.Random | None = None, stratified: bool = False,
                       weighting: str = "softmax10**", warn=lambda message: None,
                       check: bool = False, progress=iter) -> list[HoldoutResult]:
    """The original tool's evaluation: per category one split, then KNN for every K.

    ``samples`` maps category → Samples (rows into ``vectors``, scores); categories are
    evaluated in the order given, sharing ``rng``. Empty categories, and splits that leave
    no training or test sample, are skipped with a warning. ``progress`` wraps the list of
    categories being worked through (e.g. a progress bar). The next category's model is
    built while one is searched (two models in memory at most).
    """
    results = []
    for category, part, split, model in read_ahead(_fitted(vectors, samples, ks, fraction, rng, stratified,
                                                           weighting, warn, progress)):
        test_rows = part.rows[split.test]
        distinct, inverse = np.unique(test_rows, return_inverse=True)
        found = model.kneighbors(vectors, max(ks), rows=distinct)
        if check:
            _check_consistency(split, found, len(part))
        observed = part.scores[split.test]
        for k in ks:
            predicted = model.predict_from(found, k)[inverse]
            mse, r2 = regression_metrics(observed, predicted)
            results.append(HoldoutResult(category, k, split, mse, r2, observed, predicted))
        del model, found  # freed pages stay with the allocator: the next category's buffers reuse them
    return results


def _fitted(vectors, samples: dict, ks: list[int], fraction: float, rng, stratified: bool, weighting: str, warn,
            progress):
    """(category, samples, split, fitted model) of each category that has both sides, in order."""
    from percept.model.knn import KNNRegressor

    for category, part in progress(list(samples.items())):
        if len(part) == 0:
            warn(f"category {category} has no samples after filtering: skipped")
            continue
        split = (stratified_split(part.scores, fraction, rng) if stratified
                 else plain_split(len(part), fraction, rng))
        if len(split.train) == 0 or len(split.test) == 0:
            warn(f"category {category}: {len(part)} samples leave an empty training or test set: skipped")
            continue
        if max(ks) > len(split.train):
            warn(f"category {category}: K={max(ks)} exceeds the {len(split.train)} training samples; "
                 "all training samples are used")
        yield category, part, split, KNNRegressor(k=max(ks), weighting=weighting).fit(
            vectors, part.scores[split.train], part.rows[split.train])


def _check_consistency(split: Split, found, n: int) -> None:
    """The --extra-assertions checks: disjoint, in-range split and sorted neighbours."""
    assert len(np.intersect1d(split.train, split.test)) == 0, "train and test overlap"
    assert np.all((split.train >= 0) & (split.train < n)), "train index out of range"
    assert len(set(split.train.tolist())) == len(split.train), "repeated train index"
    assert found.index.shape == found.similarity.shape, "neighbour arrays disagree in shape"
    assert np.all(np.diff(found.similarity, axis=1) <= 1e-12), "neighbours not sorted by similarity"
    assert np.all(found.similarity <= 1 + 1e-9), "similarity above 1: vectors not normalised"
