"""Nested cross-validation against scikit-learn's GridSearchCV inside cross-validation, and the cluster bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.model_selection import cross_validate as sklearn_cross_validate
from sklearn.neighbors import KNeighborsRegressor

from percept.data.survey import Samples
from percept.errors import PerceptError
from percept.model.knn import KNNRegressor, l2_normalise
from percept.study import bootstrap
from percept.study.crossval import CVPlan, cross_validate, repeat_folds
from percept.study.folds import GroupBy, sample_groups
from percept.study.nested import inner_folds_of, metric_intervals, nested_cross_validate, pooled_metrics

KS = [1, 2, 4, 7, 12, 20]


def softmax_of_powers(distances: np.ndarray) -> np.ndarray:
    """The ``softmax10**`` weighting written from cosine distances: softmax over neighbours of 10 ** similarity."""
    powers = 10.0 ** (1.0 - distances)
    weights = np.exp(powers - powers.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def divide_by_sum(distances: np.ndarray) -> np.ndarray:
    """The ``divbysum`` weighting from cosine distances: similarities over their sum."""
    similarity = 1.0 - distances
    return similarity / similarity.sum(axis=1, keepdims=True)


SKLEARN_WEIGHTS = {"softmax10**": softmax_of_powers, "divbysum": divide_by_sum}


def spatial_data(n=96, dim=10, seed=0):
    """Distinct unit vectors whose scores follow them, placed at random in a 2 km square (for block groups)."""
    rng = np.random.default_rng(seed)
    vectors = l2_normalise(np.abs(rng.standard_normal((n, dim))) + 0.2)  # positive: divbysum weights stay positive
    scores = 3 + 2 * (vectors @ rng.standard_normal(dim)) + 0.3 * rng.standard_normal(n)
    lonlat = np.column_stack([4.90 + rng.uniform(0, 0.03, n), 52.36 + rng.uniform(0, 0.018, n)])
    return vectors, Samples(np.arange(n), scores), lonlat


def splits(fold_of: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(folds)]


@pytest.mark.parametrize("weighting", ["softmax10**", "divbysum"])
@pytest.mark.parametrize("group_by", [GroupBy("none"), GroupBy("block", 400.0)])
def test_nested_cv_equals_gridsearch_inside_cross_validation(weighting, group_by):
    vectors, samples, lonlat = spatial_data()
    plan = CVPlan(folds=4, repeats=2, group_by=group_by, seed=5)
    [result] = nested_cross_validate(vectors, {"walkability": samples}, KS, plan, weighting, lonlat=lonlat,
                                     inner_folds=3, resamples=50)
    groups = sample_groups(group_by, samples.rows, lonlat)
    knn = KNeighborsRegressor(metric="cosine", algorithm="brute", weights=SKLEARN_WEIGHTS[weighting])
    for repeat, fold_of in enumerate(repeat_folds(samples, plan, lonlat)):
        assert np.array_equal(result.folds[repeat], fold_of)
        for fold, (train, test) in enumerate(splits(fold_of, 4)):
            inner = splits(inner_folds_of(samples, groups, train, 3, plan, repeat, fold), 3)
            search = GridSearchCV(knn, {"n_neighbors": KS}, cv=inner, scoring="neg_mean_squared_error")
            outer = sklearn_cross_validate(search, vectors, samples.scores, cv=[(train, test)],
                                           scoring="neg_mean_squared_error", return_estimator=True)
            fitted = outer["estimator"][0]
            assert result.chosen_k[repeat, fold] == fitted.best_params_["n_neighbors"]
            assert result.inner_mse[repeat, fold] == pytest.approx(-fitted.cv_results_["mean_test_score"],
                                                                   rel=0, abs=1e-9)
            assert result.outer_mse[repeat, fold] == pytest.approx(-outer["test_score"][0], rel=0, abs=1e-9)
            predicted = fitted.predict(vectors[test])
            assert result.predicted[repeat, test] == pytest.approx(predicted, rel=0, abs=1e-9)
            assert result.outer_r2[repeat, fold] == pytest.approx(r2_score(samples.scores[test], predicted),
                                                                  rel=0, abs=1e-9)
    assert len(set(result.chosen_k.ravel())) > 1  # the data make the choice vary, so the comparison means something


def test_rated_images_are_chosen_on_image_folds_as_per_fold_models_do():
    """Individual ratings (one vector rated many times): each part fitted on its own gives the same numbers."""
    rng = np.random.default_rng(1)
    vectors = l2_normalise(rng.standard_normal((40, 8)))
    truth = 3 + vectors @ rng.standard_normal(8)
    rows = np.repeat(np.arange(40), rng.integers(1, 5, 40))
    scores = np.clip(np.round(truth[rows] + 0.5 * rng.standard_normal(len(rows))), 1, 5)
    samples = Samples(rows, scores)
    plan = CVPlan(folds=3, repeats=2, group_by=GroupBy("image"), seed=2)
    [result] = nested_cross_validate(vectors, {"safety": samples}, [1, 3, 6, 10], plan, "softmax", resamples=20)
    groups = sample_groups(plan.group_by, rows)
    for repeat, fold_of in enumerate(repeat_folds(samples, plan)):
        for fold, (train, test) in enumerate(splits(fold_of, 3)):
            inner_of = inner_folds_of(samples, groups, train, 3, plan, repeat, fold)
            errors = np.zeros(4)
            for part_train, part_test in splits(inner_of, 3):
                model = KNNRegressor(1, "softmax").fit(vectors, scores[train[part_train]], rows[train[part_train]])
                for j, k in enumerate([1, 3, 6, 10]):
                    guess = model.predict(vectors[rows[train[part_test]]], k)
                    errors[j] += mean_squared_error(scores[train[part_test]], guess) / 3
            chosen = [1, 3, 6, 10][int(np.argmin(errors))]
            assert result.chosen_k[repeat, fold] == chosen
            model = KNNRegressor(chosen, "softmax").fit(vectors, scores[train], rows[train])
            guess = model.predict(vectors[rows[test]])
            assert result.outer_mse[repeat, fold] == pytest.approx(mean_squared_error(scores[test], guess), abs=1e-12)
            assert result.predicted[repeat, test] == pytest.approx(guess, abs=1e-12)


def test_inner_folds_stay_in_the_training_part_and_keep_groups_whole():
    rng = np.random.default_rng(3)
    rows = np.repeat(np.arange(50), 3)
    samples = Samples(rows, rng.integers(1, 6, len(rows)).astype(float))
    plan = CVPlan(folds=4, group_by=GroupBy("image"), stratified=True, seed=9)
    groups = sample_groups(plan.group_by, rows)
    fold_of = repeat_folds(samples, plan)[0]
    seen = []
    for fold, (train, _) in enumerate(splits(fold_of, 4)):
        inner_of = inner_folds_of(samples, groups, train, 3, plan, 0, fold)
        assert inner_of.shape == train.shape and set(inner_of) == {0, 1, 2}
        for image in np.unique(rows[train]):
            assert len(set(inner_of[rows[train] == image])) == 1
        assert np.array_equal(inner_of, inner_folds_of(samples, groups, train, 3, plan, 0, fold))
        seen.append(inner_of)
    other_repeat = inner_folds_of(samples, groups, splits(fold_of, 4)[0][0], 3, plan, 1, 0)
    assert not np.array_equal(seen[0], other_repeat)


def test_ties_go_to_the_smaller_k_and_the_grid_edge_is_reported():
    rng = np.random.default_rng(4)
    vectors = l2_normalise(rng.standard_normal((30, 6)))
    samples = Samples(np.arange(30), rng.uniform(1, 5, 30))
    plan = CVPlan(folds=3, repeats=2, seed=1)
    # inner training parts hold 13 or 14 samples: every K of the grid uses all of them, so the errors tie exactly
    [result] = nested_cross_validate(vectors, {"greenness": samples}, [25, 15, 40], plan, resamples=20)
    assert result.ks == [15, 25, 40]
    assert np.ptp(result.inner_mse, axis=2).max() == 0.0
    assert (result.chosen_k == 15).all()
    assert result.k_counts == {15: 6, 25: 0, 40: 0}
    assert (result.smallest_chosen, result.largest_chosen) == (6, 0)
    assert result.edge_chosen and result.edge_majority


def test_edge_counts_follow_the_chosen_ks():
    vectors, samples, _ = spatial_data(seed=2)
    plan = CVPlan(folds=5, repeats=3, seed=0)
    [result] = nested_cross_validate(vectors, {"walkability": samples}, KS, plan, resamples=20)
    chosen = result.chosen_k.ravel().tolist()
    assert result.k_counts == {k: chosen.count(k) for k in KS} and sum(result.k_counts.values()) == 15
    low, high = chosen.count(KS[0]), chosen.count(KS[-1])
    assert result.edge_chosen == (low + high > 0)
    assert result.edge_majority == (max(low, high) > 7.5)
    assert result.mean("mse") == pytest.approx(np.mean(result.outer_mse))
    assert result.std("r2") == pytest.approx(np.std(result.outer_r2, ddof=1))


def test_nested_cv_refuses_impossible_inner_folds():
    vectors, samples, _ = spatial_data(n=12)
    with pytest.raises(PerceptError, match="inner folds from the 9 samples of an outer training part"):
        nested_cross_validate(vectors, {"walkability": samples}, [1, 2], CVPlan(folds=4), inner_folds=10)
    with pytest.raises(PerceptError, match="at least 2 inner folds"):
        nested_cross_validate(vectors, {"walkability": samples}, [1, 2], CVPlan(folds=4), inner_folds=1)
    with pytest.raises(PerceptError, match="positive"):
        nested_cross_validate(vectors, {"walkability": samples}, [0, 2], CVPlan(folds=4))


# ---------------------------------------------------------------- intervals


def naive_intervals(observed, predicted, groups, seed, resamples):
    """Resample groups by hand, copy their samples, score each repeat with scikit-learn, take percentiles."""
    labels, group_of = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(group_of == g) for g in range(len(labels))]
    drawn = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    values = []
    for draw in drawn:
        picked = np.concatenate([members[g] for g in draw])
        values.append([np.mean([mean_squared_error(observed[picked], p[picked]) for p in predicted]),
                       np.mean([r2_score(observed[picked], p[picked]) for p in predicted])])
    lo, hi = np.percentile(np.array(values), [2.5, 97.5], axis=0)
    return {"mse": (lo[0], hi[0]), "r2": (lo[1], hi[1])}


def noisy_predictions(n=60, repeats=3, seed=0):
    rng = np.random.default_rng(seed)
    observed = rng.integers(1, 6, n).astype(float)
    predicted = observed + rng.normal(0, 0.8, (repeats, n))
    groups = rng.integers(0, 17, n)
    return observed, predicted, groups


def test_metric_intervals_equal_resampling_the_groups_by_hand(monkeypatch):
    observed, predicted, groups = noisy_predictions()
    expected = naive_intervals(observed, predicted, groups, seed=3, resamples=300)
    got = metric_intervals(observed, predicted, groups, seed=3, resamples=300)
    monkeypatch.setattr(bootstrap, "CHUNK_ENTRIES", 17 * 7)  # resamples drawn 7 at a time: the same draws
    chunked = metric_intervals(observed, predicted, groups, seed=3, resamples=300)
    for metric in ("mse", "r2"):
        assert got[metric] == pytest.approx(expected[metric], rel=0, abs=1e-9)
        assert chunked[metric] == pytest.approx(expected[metric], rel=0, abs=1e-12)


def test_intervals_hold_the_estimate_and_depend_only_on_the_seed():
    observed, predicted, groups = noisy_predictions(n=200, seed=1)
    estimate = pooled_metrics(observed, predicted)
    assert estimate["mse"] == pytest.approx(np.mean([mean_squared_error(observed, p) for p in predicted]))
    assert estimate["r2"] == pytest.approx(np.mean([r2_score(observed, p) for p in predicted]))
    first = metric_intervals(observed, predicted, groups, seed=11)
    assert first == metric_intervals(observed, predicted, groups, seed=11)
    assert first != metric_intervals(observed, predicted, groups, seed=12)
    for metric, (lo, hi) in first.items():
        assert lo < estimate[metric] < hi


def test_duplicating_a_groups_ratings_does_not_narrow_the_interval():
    observed, predicted, groups = noisy_predictions(n=120, seed=2)
    twice = np.concatenate([observed, observed]), np.concatenate([predicted, predicted], axis=1)
    doubled_groups = np.concatenate([groups, groups])
    grouped = metric_intervals(observed, predicted, groups, seed=4)
    grouped_twice = metric_intervals(*twice, doubled_groups, seed=4)
    for metric in ("mse", "r2"):  # a group's sums double, so every resample's statistic is unchanged
        assert grouped_twice[metric] == pytest.approx(grouped[metric], rel=1e-12, abs=1e-12)
    single = metric_intervals(observed, predicted, None, seed=4)
    single_twice = metric_intervals(*twice, None, seed=4)
    width = {name: iv["mse"][1] - iv["mse"][0] for name, iv in
             {"single": single, "single_twice": single_twice}.items()}
    assert width["single_twice"] < 0.8 * width["single"]  # resampling ratings would pretend to twice the data


def test_nested_result_intervals_resample_the_cv_groups():
    vectors, samples, lonlat = spatial_data(seed=3)
    plan = CVPlan(folds=4, group_by=GroupBy("block", 500.0), seed=2)
    [result] = nested_cross_validate(vectors, {"walkability": samples}, [3, 8], plan, lonlat=lonlat, resamples=200)
    groups = sample_groups(plan.group_by, samples.rows, lonlat)
    assert np.array_equal(result.groups, groups)
    assert result.intervals == metric_intervals(samples.scores, result.predicted, groups, seed=2, resamples=200)
    assert result.pooled == pooled_metrics(samples.scores, result.predicted)
    assert result.pooled["mse"] == pytest.approx(mean_squared_error(samples.scores, result.predicted[0]))


def test_ordinary_cv_gets_intervals_over_its_own_groups():
    rng = np.random.default_rng(5)
    vectors = l2_normalise(rng.standard_normal((50, 8)))
    rows = np.repeat(np.arange(50), 3)
    scores = np.clip(np.round(3 + 2 * vectors[rows, 0] + 0.5 * rng.standard_normal(len(rows))), 1, 5)
    plan = CVPlan(folds=5, repeats=2, group_by=GroupBy("image"), seed=1)
    [result] = cross_validate(vectors, {"safety": Samples(rows, scores)}, [5], plan, baselines=False)
    groups = sample_groups(plan.group_by, rows)
    intervals = metric_intervals(result.observed, result.predicted[5], groups, seed=1, resamples=500)
    estimate = pooled_metrics(result.observed, result.predicted[5])
    assert estimate["mse"] == pytest.approx(np.mean([mean_squared_error(scores, p) for p in result.predicted[5]]))
    for metric, (lo, hi) in intervals.items():
        assert lo < estimate[metric] < hi
    by_hand = naive_intervals(result.observed, result.predicted[5], groups, 1, 500)
    for metric in ("mse", "r2"):
        assert intervals[metric] == pytest.approx(by_hand[metric], rel=0, abs=1e-9)


def test_metric_intervals_refuse_mismatched_inputs():
    with pytest.raises(PerceptError, match="predictions per repeat"):
        metric_intervals(np.ones(5), np.ones((2, 4)))
    with pytest.raises(PerceptError, match="group labels"):
        metric_intervals(np.ones(5), np.ones(5), groups=np.zeros(4))
    with pytest.raises(PerceptError, match="NaN"):
        metric_intervals(np.ones(3), np.array([1.0, np.nan, 2.0]))
