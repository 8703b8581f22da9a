"""The tie rule and exactness on adversarial data, in every search path, against a float64 brute force.

"Ties go to the earlier training sample" must hold for equal vectors stored in different rows and for
queries equidistant from many samples; near-duplicates closer than float32 resolution must still be
ordered as in float64. The reference is a plain float64 search: similarity of each query with each
distinct vector (so equal vectors get one value), samples ordered by (similarity desc, position asc).
Every test runs with each similarity screen (AMX tiles where the CPU has them, and float32).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from percept.categories import CATEGORIES
from percept.city.rating import rate
from percept.data.embeddings import write_part
from percept.model.io import ExportedModel, ModelSettings, save_model
from percept.model.knn import KNNRegressor, l2_normalise
from percept.model.neighbour_lists import fold_neighbours, neighbour_lists
from percept.model.scoring import MultiScorer
from percept.model.screens import absolute_error, float32_error
from percept.model.unit_rows import UnitRows
from percept.model.weighting import neighbour_weights


@pytest.fixture(autouse=True)
def each_screen(screen):
    """Every search here runs with each similarity screen (AMX tiles where the CPU has them, float32)."""
    return screen


def brute_force(vectors, rows, queries, k):
    """(index, similarity) of the K nearest samples ``vectors[rows[j]]`` of each query, in float64."""
    vectors = np.asarray(vectors, dtype=np.float64)
    distinct, inverse = np.unique(vectors[rows], axis=0, return_inverse=True)
    sims = (np.asarray(queries, dtype=np.float64) @ distinct.T)[:, inverse.ravel()]
    order = np.argsort(-sims, axis=1, kind="stable")[:, :min(k, len(rows))]
    return order, np.take_along_axis(sims, order, axis=1)


def brute_predict(vectors, rows, scores, queries, k, weighting="softmax10**"):
    index, sims = brute_force(vectors, rows, queries, k)
    return np.sum(neighbour_weights(sims, weighting) * scores[index], axis=1)


def identical(rng, dim=24):
    """300 samples of one vector: every query ties with all of them."""
    vector = l2_normalise(rng.normal(size=(1, dim)))
    return np.repeat(vector, 300, axis=0), np.vstack([vector, l2_normalise(rng.normal(size=(20, dim)))])


def duplicated_rows(rng, dim=24):
    """Two images with equal embeddings, many times over: equal vectors at scattered rows."""
    base = l2_normalise(rng.normal(size=(60, dim)))
    vectors = base[rng.integers(0, 60, 400)]
    return vectors, np.vstack([base[:10], l2_normalise(rng.normal(size=(30, dim)))])


def near_duplicates(rng, dim=24, spread=1e-7):
    """Clusters of vectors ``spread`` apart: their similarities differ below float32 resolution (queries
    near the clusters, not on them, where the differences would be of second order, below float64's)."""
    base = l2_normalise(rng.normal(size=(30, dim)))
    vectors = l2_normalise(np.repeat(base, 12, axis=0) + spread * rng.normal(size=(360, dim)))
    queries = l2_normalise(np.vstack([base + 1e-3 * rng.normal(size=(30, dim)), rng.normal(size=(10, dim))]))
    return vectors[rng.permutation(360)], queries


def equidistant(rng, dim=32):
    """Vectors of four ±1/2 entries and dyadic queries: similarities are exact, in float32 too,
    so hundreds of distinct vectors tie exactly with each query."""
    vectors = np.zeros((600, dim))
    for row in vectors:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    queries = np.zeros((40, dim))
    for row in queries:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    queries[:10] = vectors[rng.integers(0, 600, 10)]
    return vectors, queries


def with_zero_query(rng, dim=24):
    """A zero query is equally similar (0) to every sample."""
    vectors = l2_normalise(rng.normal(size=(200, dim)))
    queries = np.vstack([np.zeros((1, dim)), l2_normalise(rng.normal(size=(5, dim)))])
    return vectors, queries


DATA = [identical, duplicated_rows, near_duplicates, equidistant, with_zero_query]


@pytest.mark.parametrize("make", DATA)
@pytest.mark.parametrize("k", [1, 7, 40])
def test_knn_regressor_equals_brute_force(make, k):
    rng = np.random.default_rng(k)
    vectors, queries = make(rng)
    rows = rng.permutation(len(vectors))  # training order differs from row order
    scores = rng.uniform(1, 5, len(rows))
    model = KNNRegressor(k, block_size=16).fit(vectors, scores, rows)
    found = model.kneighbors(queries)
    index, sims = brute_force(vectors, rows, queries, k)
    np.testing.assert_array_equal(found.index, index)
    np.testing.assert_allclose(found.similarity, sims, rtol=0, atol=1e-14)
    np.testing.assert_allclose(model.predict(queries), brute_predict(vectors, rows, scores, queries, k), rtol=1e-12)


@pytest.mark.parametrize("make", [identical, duplicated_rows, equidistant])
def test_float16_rows_equal_brute_force(make):
    """The drop-in's path: float16 embeddings read as UnitRows (float32 product on the stored rows scaled
    to unit length, float64 re-ranking from the stored rows)."""
    rng = np.random.default_rng(3)
    vectors, queries = make(rng)
    raw = np.vstack([vectors, queries]).astype(np.float16)
    unit = UnitRows(raw)
    normalised = l2_normalise(raw)
    train, test = np.arange(len(vectors)), np.arange(len(vectors), len(raw))
    rows = rng.permutation(train)
    model = KNNRegressor(25, block_size=16).fit(unit, np.zeros(len(rows)), rows)
    found = model.kneighbors(unit, rows=test)
    index, sims = brute_force(normalised, rows, normalised[test], 25)
    np.testing.assert_array_equal(found.index, index)
    np.testing.assert_allclose(found.similarity, sims, rtol=0, atol=1e-14)


def test_unit_rows_read_as_l2_normalise():
    raw = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float16)
    raw[3] = 0
    unit = UnitRows(raw)
    np.testing.assert_array_equal(np.asarray(unit), l2_normalise(raw))
    np.testing.assert_array_equal(unit[[4, 3, 9]], l2_normalise(raw)[[4, 3, 9]])
    np.testing.assert_array_equal(unit.float32([1, 2]), l2_normalise(raw)[[1, 2]].astype(np.float32))


def model_of(vectors, rng, k):
    """Five categories over the vectors: each a different subset, in a different order."""
    rows = {c: rng.permutation(len(vectors))[:len(vectors) - 20 * i] for i, c in enumerate(CATEGORIES)}
    return ExportedModel({c: vectors[r] for c, r in rows.items()},
                         {c: rng.uniform(1, 5, len(r)) for c, r in rows.items()}, ModelSettings(k=k))


@pytest.mark.parametrize("make", DATA)
def test_multi_scorer_equals_brute_force(make):
    rng = np.random.default_rng(11)
    vectors, queries = make(rng)
    model = model_of(vectors, rng, k=30)
    predicted, neighbours = MultiScorer(model, block_size=16).predict_with_neighbours(queries)
    for column, category in enumerate(CATEGORIES):
        own = model.vectors[category]
        index, sims = brute_force(own, np.arange(len(own)), queries, 30)
        np.testing.assert_array_equal(neighbours[category].index, index)
        np.testing.assert_allclose(neighbours[category].similarity, sims, rtol=0, atol=1e-14)
        want = brute_predict(own, np.arange(len(own)), model.scores[category], queries, 30)
        np.testing.assert_allclose(predicted[:, column], want, rtol=1e-12)


def self_near_duplicates(rng):
    """Near-duplicates searched from their own cluster (as cross-validation does): at 1e-5 apart the
    similarities within a cluster differ by ~1e-10, far below float32 resolution, far above float64's."""
    return near_duplicates(rng, spread=1e-5)


@pytest.mark.parametrize("make", [identical, duplicated_rows, self_near_duplicates, equidistant])
def test_cross_validation_lists_equal_brute_force(make):
    rng = np.random.default_rng(5)
    vectors, _ = make(rng)
    rows = rng.integers(0, len(vectors), 500)  # samples in survey order, many vectors rated twice
    lists = neighbour_lists(vectors, rows, 30)
    fold = rng.integers(0, 4, len(rows))
    for f in range(4):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        found = fold_neighbours(lists, vectors, rows, train, lists.vector_of[test], 20)
        index, sims = brute_force(vectors, rows[train], vectors[rows[test]], 20)
        np.testing.assert_array_equal(found.index, train[index])
        np.testing.assert_allclose(found.similarity, sims, rtol=0, atol=1e-14)


@pytest.mark.parametrize("make", [duplicated_rows, near_duplicates, equidistant])
def test_rate_equals_brute_force(tmp_path, make):
    """``percept rate``: float16 query embeddings against a model with adversarial vectors."""
    rng = np.random.default_rng(9)
    vectors, queries = make(rng)
    model = model_of(vectors, rng, k=25)
    path = tmp_path / "model.npz"
    save_model(path, model.vectors, model.scores, model.settings)
    stored = queries.astype(np.float16)
    names = [f"q{i}.jpg" for i in range(len(stored))]
    write_part(tmp_path / "emb", "img", 0, stored, pd.DataFrame({"image_path": names}))
    rate(model, tmp_path / "emb", tmp_path / "rated.csv", chunk_size=7, quiet=True)
    table = pd.read_csv(tmp_path / "rated.csv")
    normalised = l2_normalise(stored)
    for category in CATEGORIES:
        own = model.vectors[category]
        want = brute_predict(own, np.arange(len(own)), model.scores[category], normalised, 25)
        np.testing.assert_allclose(table[category].to_numpy(), want, rtol=1e-12)


def hard_sums(rng, dim: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(queries, vectors) whose products are long sums with cancellation: elements over six orders of magnitude,
    and vectors 1e-4 from half the queries."""
    queries = l2_normalise(rng.normal(size=(64, dim)) * np.logspace(-6, 0, dim))
    vectors = l2_normalise(np.vstack([queries[:32] + 1e-4 * rng.normal(size=(32, dim)),
                                      rng.normal(size=(200, dim)) * np.logspace(0, -6, dim)]))
    return queries, vectors


def test_float32_error_bound_holds_on_hard_sums():
    """Long sums with cancellation: the float32 product stays within the stated bound."""
    dim = 1024
    queries, vectors = hard_sums(np.random.default_rng(2), dim)
    approx = queries.astype(np.float32) @ vectors.astype(np.float32).T
    error = np.abs(approx - queries @ vectors.T)
    bound = absolute_error(dim, np.ones(len(queries)), 1.0)[:, None]
    assert (error <= bound).all()
    assert float32_error(dim) < 1e-4
