"""Uncertainty per prediction against a plain numpy brute force: weighted sd, best similarity, the
survey's domain threshold, out-of-domain flags and leave-one-out scores of survey images."""

from __future__ import annotations

import brute_force
import numpy as np
import pytest

from percept import api
from percept.categories import CATEGORIES
from percept.model.estimates import Estimator
from percept.model.io import ExportedModel, ModelSettings, load_model, save_model
from percept.model.knn import Neighbours, l2_normalise
from percept.model.leave_one_out import image_keys, leave_out
from percept.model.scoring import MultiScorer
from percept.model.uncertainty import best_similarity, is_out_of_domain, weighted_sd


def unit(rng, n, dim):
    return l2_normalise(rng.normal(size=(n, dim)))


def survey_model(rng, n=120, dim=16, k=5, weighting="softmax10**", ratings=1):
    """Every category rates most of ``n`` named images, ``ratings`` samples per image (in survey order)."""
    vectors = unit(rng, n, dim)
    names = np.array([f"img_{i}.jpg" for i in range(n)])
    rows = {}
    for number, category in enumerate(CATEGORIES):
        kept = np.flatnonzero(rng.random(n) > 0.08 * number)
        rows[category] = np.repeat(kept, rng.integers(1, ratings + 1, len(kept)))
    return ExportedModel({c: vectors[r] for c, r in rows.items()},
                         {c: rng.uniform(1, 5, len(r)) for c, r in rows.items()},
                         ModelSettings(clip_model="x", k=k, weighting=weighting),
                         {c: names[r].tolist() for c, r in rows.items()}), vectors, names


def brute_estimates(model: ExportedModel, queries, k, weighting, own_names=None):
    """Per query and category: brute-force mean, sd and (over categories) best similarity."""
    means = np.empty((len(queries), len(CATEGORIES)))
    sds = np.empty_like(means)
    best = np.full(len(queries), -np.inf)
    for q, query in enumerate(queries):
        for column, category in enumerate(CATEGORIES):
            excluded = None
            if own_names is not None:
                excluded = np.array(model.images[category]) == own_names[q]
            means[q, column], sds[q, column], top = brute_force.estimate(
                model.vectors[category], model.scores[category], query, k, weighting, excluded)
            best[q] = np.nanmax([best[q], top])
    return means, sds, best


def test_weighted_sd_equals_numpy_average():
    rng = np.random.default_rng(0)
    scores = rng.uniform(1, 5, (7, 9))
    weights = rng.random((7, 9))
    want = [np.sqrt(np.average((s - np.average(s, weights=w)) ** 2, weights=w)) for s, w in zip(scores, weights)]
    np.testing.assert_allclose(weighted_sd(scores, weights), want, rtol=1e-12)
    assert weighted_sd(np.full((1, 4), 3.0), np.ones((1, 4)))[0] == 0.0
    assert weighted_sd(np.array([[2.0]]), np.array([[1.0]]))[0] == 0.0


@pytest.mark.parametrize("k,weighting,ratings", [(5, "softmax10**", 1), (1, "softmax10**", 1), (12, "divbysum", 3),
                                                 (4, "fixed", 6), (200, "softmax", 1)])
def test_estimates_equal_brute_force(k, weighting, ratings):
    rng = np.random.default_rng(k)
    model, vectors, _ = survey_model(rng, k=k, weighting=weighting, ratings=ratings)
    queries = np.vstack([unit(rng, 30, vectors.shape[1]), vectors[:5]])
    estimator = Estimator(model)
    found = estimator.estimate(queries)
    means, sds, best = brute_estimates(model, queries, k, weighting)
    np.testing.assert_array_equal(found.scores, MultiScorer(model).predict(queries))
    np.testing.assert_allclose(found.scores, means, rtol=0, atol=1e-12)
    np.testing.assert_allclose(found.sd, sds, rtol=0, atol=1e-12)
    np.testing.assert_allclose(found.best_similarity, best, rtol=0, atol=1e-12)
    np.testing.assert_allclose(found.best_similarity, (queries @ vectors.T).max(axis=1), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(found.out_of_domain, best < model.domain_threshold)
    assert not found.in_survey.any()


def test_out_of_domain_flags():
    np.testing.assert_array_equal(is_out_of_domain(np.array([0.1, 0.5, np.nan, 0.3]), 0.3),
                                  [True, False, False, False])
    assert not is_out_of_domain(np.array([0.0]), None).any()
    rng = np.random.default_rng(3)
    model, vectors, _ = survey_model(rng, dim=8)
    far = l2_normalise(-vectors.mean(axis=0, keepdims=True))
    found = Estimator(model).estimate(np.vstack([far, vectors[:3]]))
    assert found.out_of_domain.tolist() == [True, False, False, False]
    np.testing.assert_allclose(found.best_similarity[1:], 1.0, atol=1e-12)


def test_leave_out_keeps_the_first_k_not_excluded_in_order():
    found = Neighbours(np.array([[4, 2, 9, 1], [5, 6, 7, 8], [3, 0, 1, 2]]),
                       np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2], [0.9, 0.9, 0.1, 0.0]]))
    excluded = np.array([[False, True, False, False], [False, False, False, False], [True, True, True, False]])
    kept, counts = leave_out(found, excluded, 2)
    assert counts.tolist() == [2, 2, 1]
    assert kept.index.tolist() == [[4, 9], [5, 6], [2, -1]]
    np.testing.assert_array_equal(kept.similarity, [[0.9, 0.7], [0.5, 0.4], [0.0, np.nan]])


def test_image_keys_count_samples_per_image():
    keys = image_keys({"walkability": ["a.jpg", "b.jpg", "a.jpg"], "safety": ["c.jpg"]},
                      {"walkability": 3, "safety": 1, "greenness": 2}, key=lambda n: n.upper())
    assert keys.lookup(["A.JPG", "C.JPG", "a.jpg"]).tolist() == [0, 2, -1]
    assert keys.widest("walkability") == 2 and keys.widest("safety") == 1 and keys.widest("greenness") == 0
    assert keys.samples["greenness"].tolist() == [-1, -1]


@pytest.mark.parametrize("k,weighting,ratings", [(5, "softmax10**", 1), (7, "divbysum", 5), (3, "fixed", 3)])
def test_leave_one_out_equals_brute_force_without_the_image(k, weighting, ratings):
    rng = np.random.default_rng(10 + k)
    model, vectors, names = survey_model(rng, k=k, weighting=weighting, ratings=ratings)
    queries = np.vstack([vectors[:40], unit(rng, 5, vectors.shape[1])])
    keys = [*names[:40], *[f"new_{i}.jpg" for i in range(5)]]
    found = Estimator(model).estimate(queries, keys)
    own = np.array([*names[:40], *[""] * 5])
    means, sds, best = brute_estimates(model, queries, k, weighting, own)
    in_survey = np.array([n in {x for c in CATEGORIES for x in model.images[c]} for n in keys])
    assert in_survey[:40].sum() > 30 and not in_survey[40:].any()
    np.testing.assert_array_equal(found.in_survey, in_survey)
    np.testing.assert_allclose(found.scores, means, rtol=0, atol=1e-12)
    np.testing.assert_allclose(found.sd, sds, rtol=0, atol=1e-12)
    np.testing.assert_allclose(found.best_similarity, best, rtol=0, atol=1e-12)
    assert (found.best_similarity[in_survey] < 1 - 1e-9).all()
    with_self = Estimator(model).estimate(queries, keys, include_self=True)
    np.testing.assert_array_equal(with_self.in_survey, in_survey)
    np.testing.assert_array_equal(with_self.scores, MultiScorer(model).predict(queries))


def test_left_out_survey_images_meet_the_threshold_as_defined():
    """Scored without themselves, survey images' best similarity is their nearest-other similarity:
    below the 5th percentile for at most 5 % of them."""
    rng = np.random.default_rng(4)
    vectors = unit(rng, 300, 12)
    names = [f"s{i}.png" for i in range(300)]
    model = ExportedModel({c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 300) for c in CATEGORIES},
                          ModelSettings(k=9), {c: names for c in CATEGORIES})
    found = Estimator(model).estimate(vectors, names)
    nearest = brute_force.nearest_other(vectors, np.arange(300))
    np.testing.assert_allclose(found.best_similarity, nearest, rtol=0, atol=1e-12)
    assert found.out_of_domain.sum() == (nearest < np.percentile(nearest, 5)).sum() == 15


def test_a_category_too_small_for_k_once_the_image_is_left_out():
    rng = np.random.default_rng(5)
    vectors = unit(rng, 6, 8)
    names = [f"i{i}" for i in range(6)]
    rows = {c: np.arange(6) for c in CATEGORIES} | {"safety": np.array([0, 0, 0, 1])}
    model = ExportedModel({c: vectors[r] for c, r in rows.items()},
                          {c: rng.uniform(1, 5, len(r)) for c, r in rows.items()},
                          ModelSettings(k=4), {c: [names[i] for i in r] for c, r in rows.items()})
    found = Estimator(model).estimate(vectors[[0, 1, 5]], ["i0", "i1", "i5"])
    safety = CATEGORIES.index("safety")
    assert found.scores[0, safety] == pytest.approx(model.scores["safety"][3], abs=1e-12)
    assert found.sd[0, safety] == 0.0
    means, sds, _ = brute_estimates(model, vectors[[0, 1, 5]], 4, "softmax10**", np.array(["i0", "i1", "i5"]))
    np.testing.assert_allclose(found.scores, means, rtol=0, atol=1e-12)
    np.testing.assert_allclose(found.sd, sds, rtol=0, atol=1e-12)
    only = ExportedModel({"safety": vectors[[2, 2]]}, {"safety": np.array([1.0, 3.0])}, ModelSettings(k=2),
                         {"safety": ["i2", "i2"]})
    alone = Estimator(only).estimate(vectors[[2]], ["i2"])
    assert np.isnan(alone.scores[0, 0]) and np.isnan(alone.sd[0, 0]) and np.isnan(alone.best_similarity[0])
    assert not alone.out_of_domain[0] and alone.in_survey[0]


def test_best_similarity_skips_empty_sets():
    a = Neighbours(np.array([[0], [1]]), np.array([[0.5], [0.2]]))
    b = Neighbours(np.array([[0], [1]]), np.array([[0.4], [0.9]]))
    np.testing.assert_array_equal(best_similarity([a, b]), [0.5, 0.9])
    np.testing.assert_array_equal(best_similarity([a, b], [np.array([1, 1]), np.array([1, 0])]), [0.5, 0.2])


def test_model_files_record_the_threshold_and_older_files_compute_it(tmp_path):
    rng = np.random.default_rng(6)
    vectors = unit(rng, 50, 8)
    scores = {c: rng.uniform(1, 5, 50) for c in CATEGORIES}
    want = np.percentile(brute_force.nearest_other(vectors, np.arange(50)), 5)
    save_model(tmp_path / "recorded.npz", {c: vectors for c in CATEGORIES}, scores,
               ModelSettings(k=5, domain_threshold=0.125))
    assert load_model(tmp_path / "recorded.npz").domain_threshold == 0.125
    save_model(tmp_path / "older.npz", {c: vectors for c in CATEGORIES}, scores, ModelSettings(k=5))
    older = load_model(tmp_path / "older.npz")
    assert older.settings.domain_threshold is None and older.domain_threshold == pytest.approx(want, abs=1e-12)
    save_model(tmp_path / "bare.npz", {c: vectors for c in CATEGORIES}, scores, None)
    assert load_model(tmp_path / "bare.npz").domain_threshold == pytest.approx(want, abs=1e-12)


def test_export_records_threshold_and_images(reference_dir, tmp_path):
    survey = reference_dir / "survey"
    data = api.load_survey(survey / "data.geojson", survey / "embeddings", demographics=survey / "demo.csv")
    api.export(data, tmp_path / "m.npz", clip_model="open_clip:ViT-B-32", k=5)
    model = load_model(tmp_path / "m.npz")
    rows = np.unique(np.concatenate([s.rows for s in data.samples.values()]))
    image_of = np.array([data.names[r] for r in rows])
    nearest = brute_force.nearest_other(data.vectors[rows], np.unique(image_of, return_inverse=True)[1])
    assert model.settings.domain_threshold == pytest.approx(np.percentile(nearest, 5), abs=1e-12)
    assert len(model.images["safety"]) == len(data.samples["safety"])
    assert max(Estimator(model).keys.widest(c) for c in CATEGORIES) > 1
