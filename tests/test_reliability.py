"""Inter-rater reliability against krippendorff, pingouin and a dense-matrix derivation; the image bootstrap."""

from __future__ import annotations

import warnings

import krippendorff
import numpy as np
import pandas as pd
import pingouin
import pytest

from percept.errors import PerceptError
from percept.study import bootstrap
from percept.study.groups import group_labels, parse_group_spec
from percept.study.reliability import (
    category_reliability,
    krippendorff_alpha,
    survey_reliability,
    variance_components,
)


def balanced(n_images=30, n_raters=4, seed=0):
    """Every rater rates every image once: true score + rater leniency + noise, rounded to 1..5."""
    rng = np.random.default_rng(seed)
    true, leniency = rng.normal(3, 0.8, n_images), rng.normal(0, 0.4, n_raters)
    images, raters = np.repeat(np.arange(n_images), n_raters), np.tile(np.arange(n_raters), n_images)
    ratings = np.clip(np.rint(true[images] + leniency[raters] + rng.normal(0, 0.7, len(images))), 1, 5)
    return images, raters, ratings


def unbalanced(n_images=40, n_raters=12, seed=1):
    """Each image rated by its own random set of 1..6 raters (a survey's design), one rater twice."""
    rng = np.random.default_rng(seed)
    true, leniency = rng.normal(3, 0.9, n_images), rng.normal(0, 0.5, n_raters)
    images, raters = [], []
    for image in range(n_images):
        chosen = rng.choice(n_raters, rng.integers(1, 7), replace=False)
        images += [image] * len(chosen)
        raters += list(chosen)
    images, raters = np.array(images + [0]), np.array(raters + [raters[0]])  # rater of image 0 rates it again
    ratings = np.clip(np.rint(true[images] + leniency[raters] + rng.normal(0, 0.8, len(images))), 1, 5)
    return images, raters, ratings


def pingouin_icc(images, raters, ratings, kind):
    frame = pd.DataFrame({"image": images, "rater": raters, "rating": ratings})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pingouin's own deprecation warnings from pandas
        table = pingouin.intraclass_corr(frame, targets="image", raters="rater", ratings="rating").set_index("Type")
    return float(table.loc[kind, "ICC"])


def package_alpha(images, raters, ratings):
    data = np.full((raters.max() + 1, images.max() + 1), np.nan)
    data[raters, images] = ratings
    return krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal")


def test_alpha_equals_the_krippendorff_package():
    for images, raters, ratings in (balanced(), balanced(n_images=12, n_raters=7, seed=3)):
        assert krippendorff_alpha(images, ratings) == pytest.approx(package_alpha(images, raters, ratings), abs=1e-12)
    images, raters, ratings = unbalanced()
    once = np.ones(len(images), dtype=bool)
    once[-1] = False  # the package holds one value per rater and image
    assert krippendorff_alpha(images[once], ratings[once]) == pytest.approx(
        package_alpha(images[once], raters[once], ratings[once]), abs=1e-12)


def test_balanced_icc_equals_pingouin():
    for seed in (0, 5):
        images, raters, ratings = balanced(seed=seed)
        result = category_reliability(images, raters, ratings, resamples=20)
        assert result.icc2k.value == pytest.approx(pingouin_icc(images, raters, ratings, "ICC(A,k)"), abs=1e-12)
        assert result.icc21.value == pytest.approx(pingouin_icc(images, raters, ratings, "ICC(A,1)"), abs=1e-12)
        assert result.harmonic_count == 4 and result.raters == 4 and result.repeated_images == 30
        one_way = category_reliability(images, None, ratings, resamples=20)  # raters unknown: one-way ANOVA
        assert one_way.icc2k.value == pytest.approx(pingouin_icc(images, raters, ratings, "ICC(1,k)"), abs=1e-12)
        assert one_way.icc21.value == pytest.approx(pingouin_icc(images, raters, ratings, "ICC(1,1)"), abs=1e-12)


def method_one_by_matrices(images, raters, ratings):
    """Henderson Method I from dense matrices: E[y'Ay] = tr(A V) for the sums of squares about the mean."""
    repeated = np.bincount(images)[images] >= 2
    images, raters, y = images[repeated], raters[repeated], ratings[repeated]
    z_image = (images[:, None] == np.unique(images)[None, :]).astype(float)
    z_rater = (raters[:, None] == np.unique(raters)[None, :]).astype(float)
    n = len(y)
    mean = np.full((n, n), 1.0 / n)
    project_image = z_image @ np.linalg.inv(z_image.T @ z_image) @ z_image.T
    project_rater = z_rater @ np.linalg.inv(z_rater.T @ z_rater) @ z_rater.T
    forms = [project_image - mean, project_rater - mean, np.eye(n) - project_image - project_rater + mean]
    covariances = [z_image @ z_image.T, z_rater @ z_rater.T, np.eye(n)]
    coefficients = np.array([[np.trace(a @ v) for v in covariances] for a in forms])
    squares = np.array([y @ a @ y for a in forms])
    return np.linalg.solve(coefficients, squares)


def test_unbalanced_components_equal_method_one_from_dense_matrices():
    images, raters, ratings = unbalanced()
    expected = method_one_by_matrices(images, raters, ratings)
    got = variance_components(images, raters, ratings)
    assert [got.images, got.raters, got.error] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    counts = np.bincount(images)
    result = category_reliability(images, raters, ratings, resamples=20)
    image_var, within = expected[0], expected[1] + expected[2]
    harmonic = np.mean(1.0 / counts[counts >= 2])
    assert result.icc2k.value == pytest.approx(image_var / (image_var + within * harmonic), abs=1e-12)
    assert result.icc21.value == pytest.approx(image_var / (image_var + within), abs=1e-12)
    # the noise ceiling counts every rated image, also those rated once
    assert result.ceiling.value == pytest.approx(image_var / (image_var + within * np.mean(1.0 / counts)), abs=1e-12)
    assert result.harmonic_count == pytest.approx(1.0 / harmonic)
    assert (result.images, result.repeated_images, result.ratings) == (40, int(np.sum(counts >= 2)), len(ratings))


def test_components_are_the_anova_mean_squares_when_balanced():
    images, raters, ratings = balanced(n_images=15, n_raters=5, seed=2)
    frame = pd.DataFrame({"image": images, "rater": raters, "rating": ratings})
    grand = ratings.mean()
    ms_images = 5 * np.sum((frame.groupby("image")["rating"].mean() - grand) ** 2) / 14
    ms_raters = 15 * np.sum((frame.groupby("rater")["rating"].mean() - grand) ** 2) / 4
    total = np.sum((ratings - grand) ** 2)
    ms_error = (total - 14 * ms_images - 4 * ms_raters) / (14 * 4)
    got = variance_components(images, raters, ratings)
    assert got.error == pytest.approx(ms_error, abs=1e-12)
    assert got.raters == pytest.approx((ms_raters - ms_error) / 15, abs=1e-12)
    assert got.images == pytest.approx((ms_images - ms_error) / 5, abs=1e-12)


def test_group_offsets_are_ratings_minus_their_images_means():
    images, raters, ratings = unbalanced(n_images=60, seed=4)
    labels = np.array(["young", "old", None])[raters % 3]
    result = category_reliability(images, raters, ratings, labels, resamples=200)
    frame = pd.DataFrame({"image": images, "rating": ratings, "group": labels})
    frame = frame[frame.groupby("image")["rating"].transform("size") >= 2]
    frame["offset"] = frame["rating"] - frame.groupby("image")["rating"].transform("mean")
    assert [o.group for o in result.offsets] == ["old", "young"]
    for offset in result.offsets:
        members = frame[frame["group"] == offset.group]
        assert offset.offset.value == pytest.approx(members["offset"].mean(), abs=1e-12)
        assert (offset.ratings, offset.images) == (len(members), members["image"].nunique())
        assert offset.offset.low < offset.offset.value < offset.offset.high


def test_a_resample_scores_as_the_copied_images_would(monkeypatch):
    """The bootstrap's weights stand for copies: copy each image w times (same raters) and compute afresh."""
    images, raters, ratings = unbalanced(seed=6)
    labels = np.array(["a", "b"])[raters % 2]
    weights = np.random.default_rng(0).integers(0, 4, 40).astype(float)
    monkeypatch.setattr(bootstrap, "resample_weights", lambda *args: iter([weights[None, :]]))
    resampled = category_reliability(images, raters, ratings, labels, resamples=1)
    copy = np.concatenate([np.flatnonzero(images == i) for i in range(40) for _ in range(int(weights[i]))])
    copy_of = np.concatenate([[c] * int(np.sum(images == i)) for c, i in
                              enumerate(i for i in range(40) for _ in range(int(weights[i])))])
    monkeypatch.undo()
    copied = category_reliability(copy_of, raters[copy], ratings[copy], labels[copy], resamples=5)
    for name in ("alpha", "icc2k", "icc21", "ceiling"):
        interval = getattr(resampled, name)
        assert interval.low == interval.high == pytest.approx(getattr(copied, name).value, abs=1e-12)
    for offset, offset_copied in zip(resampled.offsets, copied.offsets):
        assert offset.offset.low == pytest.approx(offset_copied.offset.value, abs=1e-12)


def test_intervals_hold_the_estimate_and_depend_only_on_the_seed():
    images, raters, ratings = unbalanced(n_images=80, seed=7)
    first = category_reliability(images, raters, ratings, seed=3, resamples=400)
    assert first == category_reliability(images, raters, ratings, seed=3, resamples=400)
    other = category_reliability(images, raters, ratings, seed=4, resamples=400)
    for name in ("alpha", "icc2k", "icc21", "ceiling"):
        estimate = getattr(first, name)
        assert estimate.low < estimate.value < estimate.high
        assert (estimate.low, estimate.high) != (getattr(other, name).low, getattr(other, name).high)


def test_duplicating_an_images_ratings_leaves_the_offset_interval_unchanged():
    """Offsets resample images: rating every image twice over (same raters) adds no information."""
    images, raters, ratings = unbalanced(n_images=60, seed=8)
    repeated = np.bincount(images)[images] >= 2  # images rated once would join the offsets when doubled
    images, raters, ratings = images[repeated], raters[repeated], ratings[repeated]
    labels = np.array(["a", "b"])[raters % 2]
    once = category_reliability(images, raters, ratings, labels, seed=1, resamples=300)
    twice = category_reliability(np.tile(images, 2), np.tile(raters, 2), np.tile(ratings, 2), np.tile(labels, 2),
                                 seed=1, resamples=300)
    for a, b in zip(once.offsets, twice.offsets):
        assert (b.offset.value, b.offset.low, b.offset.high) == pytest.approx(
            (a.offset.value, a.offset.low, a.offset.high), abs=1e-12)
        assert b.ratings == 2 * a.ratings


def test_survey_reliability_splits_the_ratings_table_by_category():
    images, raters, ratings = unbalanced(n_images=50, seed=9)
    frame = pd.DataFrame({"image_id": pd.array(images + 1, dtype="Int64"),
                          "category_id": pd.array(np.where(np.arange(len(images)) % 3 == 0, 4, 1), dtype="Int64"),
                          "rating": pd.array(ratings.astype(int), dtype="Int64"),
                          "session_id": pd.array(raters + 100, dtype="Int64"),
                          "gender": np.array(["man", "woman", "other"])[raters % 3]})
    labels = group_labels(frame, parse_group_spec("gender"))
    results = survey_reliability(frame, labels=labels, seed=2, resamples=50)
    assert [r.category for r in results] == ["walkability", "greenness"]
    for result, category_id in zip(results, (1, 4)):
        part = (frame["category_id"] == category_id).to_numpy()
        alone = category_reliability(images[part], raters[part], ratings[part], labels[part], result.category, 2, 50)
        assert result == alone
    with pytest.raises(PerceptError, match="session_id"):
        survey_reliability(frame.drop(columns="session_id"))


def test_without_repeated_ratings_the_statistics_are_undefined():
    result = category_reliability(np.arange(5), np.arange(5), np.array([1, 2, 3, 4, 5]), resamples=10)
    assert result.repeated_images == 0
    assert np.isnan(result.alpha.value) and np.isnan(result.icc2k.value) and np.isnan(result.ceiling.value)
    assert np.isnan(result.icc2k.low)


def test_ratings_off_the_scale_are_refused():
    with pytest.raises(PerceptError, match="1 to 5"):
        krippendorff_alpha(np.array([0, 0, 1]), np.array([1, 2.5, 3]))
    with pytest.raises(PerceptError, match="one of each per rating"):
        variance_components(np.array([0, 0]), np.array([1]), np.array([1, 2]))
