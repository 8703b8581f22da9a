"""Train/test splits with the original tool's random-state semantics, and the metrics."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import mean_squared_error, r2_score

from percept.errors import PerceptError

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
        if self.train_counts is None:
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
    """Mean squared error and R² (scikit-learn's definitions)."""
    if len(observed) == 0:
        return float("nan"), float("nan")
    mse = float(mean_squared_error(observed, predicted))
    r2 = float(r2_score(observed, predicted)) if len(observed) > 1 else float("nan")
    return mse, r2
