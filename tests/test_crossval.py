"""Cross-validation: folds, per-fold metrics against a by-hand computation, ridge against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from percept.data.survey import Samples
from percept.errors import PerceptError
from percept.model.knn import KNNRegressor, l2_normalise
from percept.model.neighbour_lists import fold_neighbours, neighbour_lists
from percept.study.crossval import (
    RANK_DECIMALS,
    RIDGE_ALPHAS,
    CVPlan,
    cross_validate,
    fold_metrics,
    repeat_folds,
    ridge_loo,
    sample_folds,
)
from percept.study.folds import GroupBy, sample_groups


def make_data(n_vectors=120, dim=16, seed=0, repeats=1):
    rng = np.random.default_rng(seed)
    vectors = l2_normalise(rng.standard_normal((n_vectors, dim)))
    truth = 3 + vectors @ rng.standard_normal(dim)
    rows = np.repeat(np.arange(n_vectors), repeats)
    scores = np.clip(np.round(truth[rows] + 0.4 * rng.standard_normal(len(rows))), 1, 5)
    return vectors, Samples(rows, scores)


@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize("group", [False, True])
def test_folds_are_disjoint_and_cover_every_sample(stratified, group):
    _, samples = make_data(repeats=3)
    plan = CVPlan(folds=5, repeats=3, stratified=stratified, group_by=GroupBy("image" if group else "none"), seed=7)
    for repeat, fold in enumerate(repeat_folds(samples, plan)):
        assert np.array_equal(fold, sample_folds(samples, plan, repeat, sample_groups(plan.group_by, samples.rows)))
        assert fold.shape == (len(samples),)
        assert set(fold) == set(range(5))  # each sample in exactly one fold, every fold used
        tests = [np.flatnonzero(fold == f) for f in range(5)]
        assert sum(len(t) for t in tests) == len(samples)
        assert len(np.unique(np.concatenate(tests))) == len(samples)
        if group:  # an image never sits in two folds
            for row in np.unique(samples.rows):
                assert len(set(fold[samples.rows == row])) == 1
        else:
            assert max(map(len, tests)) - min(map(len, tests)) <= 1
    again = sample_folds(samples, plan, 0)
    assert np.array_equal(again, sample_folds(samples, plan, 0))  # deterministic from the seed
    assert not np.array_equal(sample_folds(samples, plan, 0), sample_folds(samples, plan, 1))


def test_stratified_folds_spread_each_score_evenly():
    _, samples = make_data(n_vectors=200)
    fold = sample_folds(samples, CVPlan(folds=4, stratified=True, seed=1), 0)
    for score in np.unique(np.floor(samples.scores)):
        counts = np.bincount(fold[np.floor(samples.scores) == score], minlength=4)
        assert counts.max() - counts.min() <= 1


def test_fold_metrics_match_computing_each_fold_by_hand():
    vectors, samples = make_data()
    ks = [3, 7, 15]
    plan = CVPlan(folds=4, repeats=1, seed=3)
    [result] = cross_validate(vectors, {"walkability": samples}, ks, plan, "softmax")
    fold = sample_folds(samples, plan, 0)
    for row in result.knn:
        for f in range(4):
            train, test = fold != f, fold == f
            model = KNNRegressor(row.k, "softmax").fit(vectors, samples.scores[train], samples.rows[train])
            predicted = model.predict(vectors[samples.rows[test]])
            observed = samples.scores[test]
            assert row.folds["mse"][f] == pytest.approx(mean_squared_error(observed, predicted))
            assert row.folds["rmse"][f] == pytest.approx(np.sqrt(mean_squared_error(observed, predicted)))
            assert row.folds["mae"][f] == pytest.approx(mean_absolute_error(observed, predicted))
            assert row.folds["r2"][f] == pytest.approx(r2_score(observed, predicted))
            assert row.folds["pearson"][f] == pytest.approx(pearsonr(observed, predicted)[0])
            # Predictions equal up to round-off rank as ties.
            ranked = np.round(predicted, RANK_DECIMALS)
            assert row.folds["spearman"][f] == pytest.approx(spearmanr(observed, ranked)[0])
            assert np.allclose(result.predicted[row.k][0, test], predicted)
            assert np.array_equal(result.folds[0], fold)
        assert row.mean("mse") == pytest.approx(np.mean(row.folds["mse"]))
        assert row.std("mse") == pytest.approx(np.std(row.folds["mse"], ddof=1))
    best = min(result.knn, key=lambda r: r.mean("mse"))
    assert best.best and sum(r.best for r in result.knn) == 1 and result.best_k == best.k
    mean_row = result.baseline("mean")
    for f in range(4):
        observed = samples.scores[fold == f]
        expected = np.full(len(observed), samples.scores[fold != f].mean())
        assert mean_row.folds["mse"][f] == pytest.approx(mean_squared_error(observed, expected))
    assert np.isnan(mean_row.mean("pearson"))  # a constant prediction has no correlation


@pytest.mark.parametrize("length", [40, 12])  # lists long enough, and too short so some rows fall back
def test_fold_neighbours_equal_knn_regressor(length):
    rng = np.random.default_rng(4)
    vectors = l2_normalise(rng.standard_normal((90, 8)))
    rows = rng.integers(0, 90, 300)  # many vectors rated several times
    scores = rng.integers(1, 6, 300).astype(float)
    lists = neighbour_lists(vectors, rows, length)
    fold = rng.integers(0, 5, 300)
    searched = 0
    for f in range(5):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        found = fold_neighbours(lists, vectors, rows, train, lists.vector_of[test], 15)
        model = KNNRegressor(15).fit(vectors, scores[train], rows[train])
        expected = model.kneighbors(vectors[rows[test]])
        assert np.array_equal(found.index, train[expected.index])
        assert np.allclose(found.similarity, expected.similarity, rtol=0, atol=1e-12)
        predicted = model.predict_from(type(expected)(np.searchsorted(train, found.index), found.similarity), 15)
        assert np.allclose(predicted, model.predict(vectors[rows[test]]), rtol=0, atol=1e-12)
        searched += found.searched.sum()
    assert (searched > 0) == (length == 12)


def test_ridge_baseline_matches_scikit_learn():
    vectors, samples = make_data(n_vectors=150, dim=24)
    plan = CVPlan(folds=3, seed=5)
    [result] = cross_validate(vectors, {"safety": samples}, [5], plan)
    fold = sample_folds(samples, plan, 0)
    ridge = result.baseline("ridge")
    for f in range(3):
        x, y = vectors[samples.rows], samples.scores
        reference = RidgeCV(alphas=RIDGE_ALPHAS).fit(x[fold != f], y[fold != f])
        predicted = reference.predict(x[fold == f])
        assert ridge.alphas[f] == reference.alpha_
        assert ridge.folds["mse"][f] == pytest.approx(mean_squared_error(y[fold == f], predicted), rel=1e-9)


@pytest.mark.parametrize("n", [200, 20])  # more samples than dimensions, and fewer
def test_ridge_loo_equals_ridgecv_coefficients(n):
    rng = np.random.default_rng(n)
    x = l2_normalise(rng.standard_normal((n, 32)))
    y = x @ rng.standard_normal((32, 2)) + 0.2 * rng.standard_normal((n, 2))
    fit = ridge_loo(x, y)
    reference = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True).fit(x, y)
    assert np.array_equal(fit.alpha, reference.alpha_)
    assert np.allclose(fit.coef.T, reference.coef_, atol=1e-10)
    assert np.allclose(fit.intercept, reference.intercept_, atol=1e-10)


def test_repeats_and_shared_categories_give_per_category_results():
    vectors, samples = make_data()
    other = Samples(samples.rows, 6 - samples.scores)
    results = cross_validate(vectors, {"a": samples, "b": other, "c": Samples(np.array([], int), np.array([]))},
                             [5, 10], CVPlan(folds=5, repeats=3, seed=2))
    assert [r.category for r in results] == ["a", "b"]  # empty categories are skipped
    for result in results:
        assert all(len(row.folds["r2"]) == 15 for row in result.rows)
        assert [row.label for row in result.rows] == ["knn k=5", "knn k=10", "mean", "ridge"]
    # b mirrors a, so its errors are identical fold by fold
    assert np.allclose(results[0].knn[0].folds["mse"], results[1].knn[0].folds["mse"])


def test_fold_metrics_names_and_bad_plans():
    metrics = fold_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert metrics["mse"] == pytest.approx(1 / 3) and metrics["spearman"] == pytest.approx(1.0)
    with pytest.raises(PerceptError):
        CVPlan(folds=1)
    vectors, samples = make_data(n_vectors=3)
    with pytest.raises(PerceptError):
        cross_validate(vectors, {"a": samples}, [2], CVPlan(folds=5))

