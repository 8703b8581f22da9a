"""Group comparison: spec parsing, labels, and the train-on x test-on R² matrix with its counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_squared_error, r2_score

from percept.data.filters import RatingFilter
from percept.data.ratings import filter_ratings, load_ratings, rating_samples
from percept.data.survey import Samples, load_survey
from percept.errors import PerceptError
from percept.model.knn import KNNRegressor, l2_normalise
from percept.study.crossval import CVPlan, repeat_folds
from percept.study.folds import GroupBy
from percept.study.groups import (
    DEFAULT_AGE_BINS,
    GroupSpec,
    compare_groups,
    group_labels,
    parse_group_spec,
)


def test_parse_group_spec():
    assert parse_group_spec("gender") == GroupSpec("gender")
    assert parse_group_spec("age") == GroupSpec("age", DEFAULT_AGE_BINS)
    assert parse_group_spec("age:18-29,30-120") == GroupSpec("age", ((18, 29), (30, 120)))
    for bad in ("height", "gender:x", "age:30-20", "age:18-40,30-50", "age:x"):
        with pytest.raises(PerceptError):
            parse_group_spec(bad)


def test_group_labels_follow_the_region_rule_and_age_bins():
    frame = pd.DataFrame({"country": ["Netherlands", "Belgium", None, "India"],
                          "postalcode": [None, "1012 AB", "1234AB", "560001"],
                          "age": pd.array([25, 40, None, 70], dtype="Int64"),
                          "gender": ["man", "woman", None, "man"]})
    assert list(group_labels(frame, parse_group_spec("region"))) == ["NL", "NL", "NL", "non-NL"]
    assert list(group_labels(frame, parse_group_spec("age:18-29,30-49"))) == ["18-29", "30-49", None, None]
    assert list(group_labels(frame, parse_group_spec("gender"))) == ["man", "woman", None, "man"]
    with pytest.raises(PerceptError):
        group_labels(frame.drop(columns="gender"), parse_group_spec("gender"))


def test_matrix_is_repeated_cv_on_the_evaluation_folds():
    rng = np.random.default_rng(0)
    vectors = l2_normalise(rng.standard_normal((60, 8)))
    rows = np.repeat(np.arange(60), 4)
    scores = rng.integers(1, 6, len(rows)).astype(float)
    labels = np.array(["a", "b", "c", None] * 60, dtype=object)
    samples = Samples(rows, scores)
    plan = CVPlan(folds=3, repeats=2, group_by=GroupBy("image"), seed=3)
    matrix = compare_groups(vectors, samples, labels, k=5, category="walkability", plan=plan)
    assert matrix.groups == ["a", "b", "c"] and matrix.group_by == "image"
    assert matrix.r2.shape == matrix.mse.shape == (3, 3, 6) and np.isfinite(matrix.r2).all()
    for repeat, fold_of in enumerate(repeat_folds(samples, plan)):
        for row in range(60):  # every image wholly in one fold
            assert len(set(fold_of[rows == row])) == 1
        for fold in range(3):
            run = repeat * 3 + fold
            for i, g in enumerate(matrix.groups):
                train = (fold_of != fold) & (labels == g)
                assert matrix.n_train[i, run] == train.sum()
                assert matrix.n_test[i, run] == np.sum((fold_of == fold) & (labels == g))
            # one cell by hand: trained on b, tested on c
            train = (fold_of != fold) & (labels == "b")
            test = (fold_of == fold) & (labels == "c")
            model = KNNRegressor(5).fit(vectors, scores[train], rows[train])
            predicted = model.predict(vectors[rows[test]])
            assert matrix.mse[1, 2, run] == pytest.approx(mean_squared_error(scores[test], predicted))
            assert matrix.r2[1, 2, run] == pytest.approx(r2_score(scores[test], predicted))
    assert matrix.mean("r2")[1, 2] == pytest.approx(np.mean(matrix.r2[1, 2]))
    assert matrix.std("mse")[0, 0] == pytest.approx(np.std(matrix.mse[0, 0], ddof=1))
    assert matrix.n_train.sum() / 2 == 2 * 180  # over a repeat's folds every labelled sample trains twice
    with pytest.raises(PerceptError):
        compare_groups(vectors, samples, np.array(["a"] * len(rows), dtype=object), k=5)


def test_equalise_subsamples_every_training_part_to_the_smallest():
    rng = np.random.default_rng(1)
    vectors = l2_normalise(rng.standard_normal((200, 8)))
    rows = np.arange(200)
    scores = rng.integers(1, 6, 200).astype(float)
    labels = np.where(rng.random(200) < 0.8, "big", "small").astype(object)
    plan = CVPlan(folds=4, repeats=2, seed=0)
    plain = compare_groups(vectors, Samples(rows, scores), labels, 5, plan=plan)
    equal = compare_groups(vectors, Samples(rows, scores), labels, 5, plan=plan, equalise=True)
    assert (plain.n_train[0] > plain.n_train[1]).all()
    assert np.array_equal(equal.n_train[0], equal.n_train[1])
    assert np.array_equal(equal.n_train[1], plain.n_train[1]) and equal.equalised
    assert np.array_equal(equal.n_test, plain.n_test)
    again = compare_groups(vectors, Samples(rows, scores), labels, 5, plan=plan, equalise=True)
    assert np.array_equal(again.mse, equal.mse)  # the subsample is seeded


def test_rating_rows_line_up_with_rating_samples(reference_dir):
    survey_dir = reference_dir / "survey"
    survey = load_survey(survey_dir / "data.geojson")
    names = [f["url"] for f in survey.features]
    ratings = filter_ratings(load_ratings(survey_dir / "demo.csv"), RatingFilter())
    found = rating_samples(names, survey, ratings)
    expected, frames = found.by_category, found.rating_rows
    for category, samples in expected.items():
        assert np.array_equal(frames[category]["row"].to_numpy(), samples.rows)
        assert np.array_equal(frames[category]["rating"].to_numpy(dtype=float), samples.scores)
