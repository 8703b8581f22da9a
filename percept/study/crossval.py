"""Repeated K-fold cross-validation of the KNN model beside two baselines.

For each category and K the metrics of every fold are kept, so callers report
mean ± standard deviation over folds. The folds of every repeat partition the
same samples, so each category's neighbour lists are searched once
(``percept.model.neighbour_lists``) and every fold filters them to its training part;
all K reuse the largest K's neighbours. Categories that hold the same samples
(same vector rows) share the lists.

Folds deal out groups of samples (``percept.study.folds``): single samples, images
(a demographic survey repeats an image once per rating), locations or square spatial
blocks, so that no test sample has a copy or a close neighbour in training.

Baselines on the same folds: the training mean, and a ridge linear probe on
the same vectors whose penalty is picked per fold by efficient leave-one-out
cross-validation on the training part (scikit-learn's ``RidgeCV`` with
``alpha_per_target=True``: same penalty grid, same choice, same coefficients).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from percept.data.survey import Samples
from percept.errors import PerceptError
from percept.model.knn import weighted_mean
from percept.model.neighbour_lists import (
    NeighbourLists,
    fold_neighbours,
    list_length,
    neighbour_lists,
)
from percept.model.unit_rows import Rows
from percept.model.weighting import DEFAULT_WEIGHTING, check_weighting
from percept.study.folds import GroupBy, sample_groups
from percept.study.holdout import regression_metrics

METRICS = ("mse", "rmse", "mae", "r2", "pearson", "spearman")
#: Ridge penalties tried by the inner leave-one-out cross-validation.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))
#: Decimals kept before ranking for Spearman's correlation.
RANK_DECIMALS = 12


@dataclass(frozen=True)
class CVPlan:
    """How samples are split: ``folds`` folds, ``repeats`` times, from ``seed``, whole groups per fold."""

    folds: int = 5
    repeats: int = 1
    stratified: bool = False
    group_by: GroupBy = field(default_factory=GroupBy)
    seed: int = 0

    def __post_init__(self):
        if self.folds < 2:
            raise PerceptError(f"--cv needs at least 2 folds, got {self.folds}")
        if self.repeats < 1:
            raise PerceptError(f"--repeats must be at least 1, got {self.repeats}")


@dataclass
class ModelScores:
    """One model's metrics on every fold (repeat-major order); ``k`` only for KNN rows."""

    model: str  # "knn", "mean" or "ridge"
    k: int | None
    folds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    alphas: list[float] = field(default_factory=list)  # ridge: the penalty chosen in each fold
    best: bool = False

    @property
    def label(self) -> str:
        return f"knn k={self.k}" if self.model == "knn" else self.model

    def mean(self, metric: str) -> float:
        return _summary(self.folds[metric], np.mean)

    def std(self, metric: str) -> float:
        """Sample standard deviation over folds (ddof=1)."""
        return _summary(self.folds[metric], lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0)


@dataclass
class CategoryResult:
    """Cross-validation of one category: KNN per K, then the baselines.

    ``predicted[k]`` (repeats, samples) holds the out-of-fold KNN predictions (in each
    repeat every sample is predicted once), ``folds`` (repeats, samples) the fold of
    each sample, both aligned with ``observed`` and ``sample_rows`` (vector rows).
    """

    category: str
    n_samples: int
    rows: list[ModelScores]
    observed: np.ndarray
    predicted: dict[int, np.ndarray]
    folds: np.ndarray
    sample_rows: np.ndarray

    @property
    def knn(self) -> list[ModelScores]:
        return [r for r in self.rows if r.model == "knn"]

    @property
    def best_k(self) -> int:
        return next(r.k for r in self.knn if r.best and r.k is not None)

    def baseline(self, model: str) -> ModelScores | None:
        return next((r for r in self.rows if r.model == model), None)


def _summary(values: list[float], reduce) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(reduce(finite)) if len(finite) else float("nan")


# ---------------------------------------------------------------- folds


def assign_folds(n: int, folds: int, rng: np.random.Generator, strata: np.ndarray | None = None,
                 unit: str = "samples") -> np.ndarray:
    """Fold number (0..folds-1) of each of ``n`` units: a random order dealt round-robin.

    With ``strata`` the order is shuffled within each stratum and strata follow
    each other, so every stratum is spread over the folds as evenly as possible.
    """
    if n < folds:
        raise PerceptError(f"cannot make {folds} folds from {n} {unit}: lower --cv, group less coarsely "
                           "(--group-by) or use more data")
    order = rng.permutation(n)
    if strata is not None:
        order = order[np.argsort(np.asarray(strata)[order], kind="stable")]
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % folds
    return fold


def sample_folds(samples: Samples, plan: CVPlan, repeat: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold of each sample in one repeat, from ``(seed, repeat)`` only (the same for equal inputs).

    ``groups`` (from :func:`percept.study.folds.sample_groups`) keeps each group in one
    fold; None deals single samples. Stratified folds balance ``int(score)``, for
    groups ``int`` of their mean score.
    """
    rng = np.random.default_rng([plan.seed, repeat])
    scores = np.asarray(samples.scores, dtype=np.float64)
    if groups is None:
        strata = np.floor(scores) if plan.stratified else None
        return assign_folds(len(scores), plan.folds, rng, strata)
    groups = np.asarray(groups, dtype=np.int64)
    count = np.bincount(groups)
    strata = None
    if plan.stratified:
        strata = np.floor(np.bincount(groups, weights=scores) / np.maximum(count, 1))
    unit = f"groups ({plan.group_by.label})"
    return assign_folds(len(count), plan.folds, rng, strata, unit)[groups]


def repeat_folds(samples: Samples, plan: CVPlan, lonlat: np.ndarray | None = None) -> list[np.ndarray]:
    """The fold of each sample in every repeat, whole groups of ``plan.group_by`` per fold."""
    groups = sample_groups(plan.group_by, samples.rows, lonlat)
    return [sample_folds(samples, plan, repeat, groups) for repeat in range(plan.repeats)]


# ---------------------------------------------------------------- metrics


def fold_metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, R² (scikit-learn's definitions), Pearson and Spearman correlation.

    A correlation with a constant side is undefined and reported as NaN. Spearman
    ranks values rounded to ``RANK_DECIMALS`` decimals, so predictions equal up to
    floating-point round-off tie.
    """
    observed = np.asarray(observed, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    mse, r2 = regression_metrics(observed, predicted)
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(observed - predicted))) if len(observed) else float("nan"),
        "r2": r2,
        "pearson": _correlation(observed, predicted),
        "spearman": _correlation(*_ranks(observed, predicted)) if len(observed) else float("nan"),
    }


def _ranks(*values: np.ndarray) -> list[np.ndarray]:
    return [rankdata(np.round(v, RANK_DECIMALS)) for v in values]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


# ---------------------------------------------------------------- ridge


@dataclass
class RidgeFit:
    """Per-target ridge fits: ``coef`` (dim, targets), ``intercept`` and chosen ``alpha`` (targets,)."""

    coef: np.ndarray
    intercept: np.ndarray
    alpha: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef + self.intercept


def ridge_loo(x: np.ndarray, y: np.ndarray, alphas=RIDGE_ALPHAS, gram: np.ndarray | None = None) -> RidgeFit:
    """Ridge with intercept, penalty per target column of ``y`` by leave-one-out error.

    Equals ``RidgeCV(alphas, alpha_per_target=True).fit(x, y)``, computed from
    the eigendecomposition of the centred Gram matrix (dim x dim), or of the
    centred kernel matrix (samples x samples) when there are fewer samples than
    dimensions; either is cheaper than an SVD of ``x``. ``gram`` may pass
    ``x.T @ x`` when the caller has it.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    n, dim = x.shape
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    wide = n < dim
    if wide:
        eigvals, basis = np.linalg.eigh(xc @ xc.T)
        eigvals = np.clip(eigvals, 0.0, None)
        q = basis * np.sqrt(eigvals)
    else:
        gram = x.T @ x if gram is None else gram
        eigvals, basis = np.linalg.eigh(gram - n * np.outer(x_mean, x_mean))
        eigvals = np.clip(eigvals, 0.0, None)
        q = xc @ basis
    z = q.T @ yc
    inverse = 1.0 / (eigvals[None, :] + np.asarray(alphas, dtype=np.float64)[:, None])  # (alphas, rank)
    leverage = 1.0 / n + (q * q) @ inverse.T  # (n, alphas)
    loo = np.empty((len(inverse), y.shape[1]))
    for a, shrink in enumerate(inverse):
        residual = (yc - q @ (shrink[:, None] * z)) / (1.0 - leverage[:, a, None])
        loo[a] = np.mean(residual * residual, axis=0)
    best = np.argmin(loo, axis=0)  # first of equal errors, as scikit-learn keeps the first
    if wide:
        coef = xc.T @ (basis @ (inverse[best].T * (basis.T @ yc)))
    else:
        coef = basis @ (inverse[best].T * z)
    return RidgeFit(coef, y_mean - x_mean @ coef, np.asarray(alphas, dtype=np.float64)[best])


# ---------------------------------------------------------------- cross-validation


def cross_validate(vectors: Rows, samples: dict[str, Samples], ks: list[int], plan: CVPlan,
                   weighting: str = DEFAULT_WEIGHTING, baselines: bool = True,
                   progress: Callable[[list], Iterable] = iter,
                   lonlat: np.ndarray | None = None) -> list[CategoryResult]:
    """Cross-validate every category with samples; the best K (lowest mean MSE) is marked.

    ``progress`` wraps the list of category groups being worked through (e.g. a progress bar);
    ``lonlat`` (vector rows, 2) places the images for location and block grouping.
    """
    weighting = check_weighting(weighting)
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise PerceptError("K values must be positive whole numbers")
    vectors = np.asarray(vectors)
    categories = [c for c, s in samples.items() if len(s)]
    if not categories:
        raise PerceptError("no category has samples to cross-validate")
    folds = {c: repeat_folds(samples[c], plan, lonlat) for c in categories}
    results: dict[str, CategoryResult] = {}
    lists: list[tuple[np.ndarray, NeighbourLists]] = []
    for family in progress(_families(categories, samples, folds)):
        shared = _lists_for(lists, vectors, samples[family[0]].rows, max(ks), plan.folds)
        results.update(_run_family(vectors, shared, family, samples, folds[family[0]], ks, plan, weighting,
                                   baselines))
    return [results[c] for c in categories]


def _families(categories: list[str], samples: dict[str, Samples], folds: dict[str, list]) -> list[list[str]]:
    """Categories grouped when their rows and folds are equal (they can share neighbour searches)."""
    families: list[list[str]] = []
    for category in categories:
        for family in families:
            head = family[0]
            if np.array_equal(samples[head].rows, samples[category].rows) and all(
                    np.array_equal(a, b) for a, b in zip(folds[head], folds[category])):
                family.append(category)
                break
        else:
            families.append([category])
    return families


def _lists_for(known: list[tuple[np.ndarray, NeighbourLists]], vectors, rows, k_max,
               folds: int) -> NeighbourLists:
    """Neighbour lists of ``rows``, reused from ``known`` when the same rows were searched before."""
    for known_rows, lists in known:
        if np.array_equal(known_rows, rows):
            return lists
    known.append((rows, neighbour_lists(vectors, rows, list_length(k_max, folds))))
    return known[-1][1]


def _run_family(vectors, lists, family, samples, repeats, ks, plan, weighting,
                baselines) -> dict[str, CategoryResult]:
    rows = samples[family[0]].rows
    scores = np.column_stack([samples[c].scores for c in family])  # (n, categories)
    knn = {c: [ModelScores("knn", k) for k in ks] for c in family}
    mean_rows = {c: ModelScores("mean", None) for c in family}
    ridge_rows = {c: ModelScores("ridge", None) for c in family}
    predicted = {c: {k: np.full((plan.repeats, len(rows)), np.nan) for k in ks} for c in family}
    for repeat, fold_of in enumerate(repeats):
        grams = _fold_grams(vectors, rows, fold_of, plan.folds) if baselines else []
        for fold in range(plan.folds):
            test = np.flatnonzero(fold_of == fold)
            train = np.flatnonzero(fold_of != fold)
            knn_pred = _knn_fold(lists, vectors, rows, scores, train, test, ks, weighting)
            for j, category in enumerate(family):
                observed = scores[test, j]
                for row, k in zip(knn[category], ks):
                    _add(row, observed, knn_pred[k][:, j])
                    predicted[category][k][repeat, test] = knn_pred[k][:, j]
            if not baselines:
                continue
            gram = sum(grams) - grams[fold]
            fit = ridge_loo(vectors[rows[train]], scores[train], gram=gram)
            ridge_pred = fit.predict(np.asarray(vectors[rows[test]], dtype=np.float64))
            for j, category in enumerate(family):
                observed = scores[test, j]
                _add(mean_rows[category], observed, np.full(len(test), scores[train, j].mean()))
                _add(ridge_rows[category], observed, ridge_pred[:, j])
                ridge_rows[category].alphas.append(float(fit.alpha[j]))
    out = {}
    for j, category in enumerate(family):
        best = min(knn[category], key=lambda r: (np.nan_to_num(r.mean("mse"), nan=np.inf), r.k))
        best.best = True
        extra = [mean_rows[category], ridge_rows[category]] if baselines else []
        out[category] = CategoryResult(category, len(rows), knn[category] + extra, scores[:, j].copy(),
                                       predicted[category], np.array(repeats), rows)
    return out


def _fold_grams(vectors, rows, fold_of, folds) -> list[np.ndarray]:
    """``X.T @ X`` of each fold's samples; a training Gram is their sum minus the test fold's."""
    grams = []
    for fold in range(folds):
        distinct, counts = np.unique(rows[fold_of == fold], return_counts=True)
        x = np.asarray(vectors[distinct], dtype=np.float64)
        grams.append((x * counts[:, None]).T @ x)
    return grams


def _knn_fold(lists, vectors, rows, scores, train, test, ks, weighting) -> dict[int, np.ndarray]:
    """Predictions (test samples, categories) per K from the neighbour lists filtered to ``train``."""
    query_vectors, inverse = np.unique(lists.vector_of[test], return_inverse=True)
    found = fold_neighbours(lists, vectors, rows, train, query_vectors, max(ks))
    return {k: np.column_stack([weighted_mean(found, scores[:, j], k, weighting)
                                for j in range(scores.shape[1])])[inverse] for k in ks}


def _add(row: ModelScores, observed: np.ndarray, predicted: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for metric, value in fold_metrics(observed, predicted).items():
            row.folds[metric].append(value)
