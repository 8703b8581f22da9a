"""The KNN model against a plain float64 brute-force search."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from percept.errors import PerceptError
from percept.model.knn import KNNRegressor, l2_normalise
from percept.model.weighting import neighbour_weights


def brute_force(train, scores, queries, k, method="softmax10**"):
    sims = queries @ train.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(sims, order, axis=1)
    return np.sum(neighbour_weights(top, method) * scores[order], axis=1), order


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    vectors = l2_normalise(rng.normal(size=(600, 48)))
    return rng, vectors


@pytest.mark.parametrize("method", ["softmax10**", "softmax", "divbysum", "softmax**8", "fixed"])
def test_predictions_equal_brute_force(data, method):
    rng, vectors = data
    scores = rng.uniform(1, 5, 500)
    model = KNNRegressor(k=25, weighting=method, block_size=37).fit(vectors[:500], scores)
    expected, order = brute_force(vectors[:500], scores, vectors[500:], 25, method)
    found = model.kneighbors(vectors[500:])
    np.testing.assert_array_equal(found.index, order)
    np.testing.assert_allclose(model.predict(vectors[500:]), expected, rtol=1e-12)


def test_repeated_vectors_tie_in_training_order(data):
    rng, vectors = data
    rows = rng.integers(0, 80, 400)  # each vector used ~5 times
    scores = rng.uniform(1, 5, 400)
    model = KNNRegressor(k=12).fit(vectors, scores, rows)
    expected, order = brute_force(vectors[rows], scores, vectors[500:], 12)
    np.testing.assert_array_equal(model.kneighbors(vectors[500:]).index, order)
    np.testing.assert_allclose(model.predict(vectors[500:]), expected, rtol=1e-12)


def test_many_k_from_one_search(data):
    rng, vectors = data
    scores = rng.uniform(1, 5, 500)
    model = KNNRegressor(k=40).fit(vectors[:500], scores)
    many = model.predict_many(vectors[500:], [1, 7, 40])
    for k in (1, 7, 40):
        np.testing.assert_allclose(many[k], brute_force(vectors[:500], scores, vectors[500:], k)[0], rtol=1e-12)


def test_k_above_training_size_uses_all(data):
    rng, vectors = data
    scores = rng.uniform(1, 5, 30)
    model = KNNRegressor(k=100).fit(vectors[:30], scores)
    np.testing.assert_allclose(model.predict(vectors[500:]), brute_force(vectors[:30], scores, vectors[500:], 30)[0])


def test_weights_follow_their_definitions():
    sims = np.array([[0.9, 0.5, 0.1]])
    np.testing.assert_allclose(neighbour_weights(sims, "softmax10**"), softmax(10 ** sims, axis=1))
    np.testing.assert_allclose(neighbour_weights(sims, "softmax"), softmax(sims, axis=1))
    np.testing.assert_allclose(neighbour_weights(sims, "divbysum"), sims / sims.sum())
    np.testing.assert_allclose(neighbour_weights(sims, "softmax**8"), softmax(sims ** 8, axis=1))
    np.testing.assert_allclose(neighbour_weights(sims, "fixed"), softmax(np.array([[2.0, 1.0, 0.0]]), axis=1))


def test_bad_k_and_empty_training():
    with pytest.raises(PerceptError, match="K must be a positive integer"):
        KNNRegressor(k=0)
    with pytest.raises(PerceptError, match="zero training samples"):
        KNNRegressor().fit(np.zeros((0, 3)), np.zeros(0))
