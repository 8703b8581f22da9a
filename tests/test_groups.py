"""Group comparison: spec parsing, labels, and the train-on x test-on R² matrix with its counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from percept.data.filters import RatingFilter
from percept.data.ratings import filter_ratings, load_ratings, rating_samples
from percept.data.survey import Samples, load_survey
from percept.errors import PerceptError
from percept.model.knn import l2_normalise
from percept.study.groups import (
    DEFAULT_AGE_BINS,
    TRAIN_FRACTION,
    GroupSpec,
    _training_side,
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


def test_matrix_counts_and_disjoint_split():
    rng = np.random.default_rng(0)
    vectors = l2_normalise(rng.standard_normal((60, 8)))
    rows = np.repeat(np.arange(60), 4)
    scores = rng.integers(1, 6, len(rows)).astype(float)
    labels = np.array(["a", "b", "c", None] * 60, dtype=object)
    samples = Samples(rows, scores)
    matrix = compare_groups(vectors, samples, labels, k=5, category="walkability", seed=3)
    in_train = _training_side(rows, len(rows), 3, False)
    assert in_train.sum() == int(len(rows) * TRAIN_FRACTION)
    assert matrix.groups == ["a", "b", "c"]
    for i, g in enumerate(matrix.groups):
        assert matrix.n_train[i] == np.sum(in_train & (labels == g))
        assert matrix.n_test[i] == np.sum(~in_train & (labels == g))
    assert matrix.n_train.sum() + matrix.n_test.sum() == np.sum(labels != None)  # noqa: E711
    assert matrix.r2.shape == (3, 3) and np.isfinite(matrix.r2).all()
    grouped = compare_groups(vectors, samples, labels, k=5, seed=3, group_by_image=True)
    side = _training_side(rows, len(rows), 3, True)
    for row in range(60):  # every image wholly on one side
        assert len(set(side[rows == row])) == 1
    assert grouped.n_train.sum() + grouped.n_test.sum() == 180
    with pytest.raises(PerceptError):
        compare_groups(vectors, samples, np.array(["a"] * len(rows), dtype=object), k=5)


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
