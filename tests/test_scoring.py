"""The multi-category scorer equals per-category KNN regression.

Neighbours are identical; similarities and predictions agree to float64 rounding (a dot product's
last bit can depend on where its row sits in the batched product of candidates).
"""

from __future__ import annotations

import numpy as np
import pytest

from percept.categories import CATEGORIES
from percept.errors import PerceptError
from percept.model.distinct import distinct_rows
from percept.model.io import ExportedModel, ModelSettings
from percept.model.knn import KNNRegressor, l2_normalise
from percept.model.scoring import MultiScorer, check_encoder
from percept.model.unit_rows import UnitRows


def unit(rng, n, dim):
    return l2_normalise(rng.normal(size=(n, dim)))


def average_model(rng, n=400, dim=24, k=10, weighting="softmax10**"):
    """Categories share vectors; each lacks a few images (null averages)."""
    vectors = unit(rng, n, dim)
    keep = {c: rng.random(n) > 0.1 * i for i, c in enumerate(CATEGORIES)}
    return ExportedModel({c: vectors[keep[c]] for c in CATEGORIES},
                         {c: rng.uniform(1, 5, keep[c].sum()) for c in CATEGORIES},
                         ModelSettings(clip_model="x", k=k, weighting=weighting))


def sparse_model(rng, n=2000, dim=24, k=10):
    """Each category rates a different third of the images (shared candidates often fall short)."""
    vectors = unit(rng, n, dim)
    keep = {c: rng.random(n) < 0.3 for c in CATEGORIES}
    return ExportedModel({c: vectors[keep[c]] for c in CATEGORIES},
                         {c: rng.uniform(1, 5, keep[c].sum()) for c in CATEGORIES}, ModelSettings(k=k))


def clustered_model(rng, n=600, dim=16, k=10):
    """Safety rates only images unlike the others: its neighbours lie outside the shared candidates."""
    vectors = unit(rng, n, dim)
    vectors[:, 0] = np.abs(vectors[:, 0]) * np.where(np.arange(n) < n // 2, 3, -3)
    vectors = l2_normalise(vectors)
    rows = {c: np.arange(n // 2) for c in CATEGORIES[:4]} | {"safety": np.arange(n // 2, n)}
    return ExportedModel({c: vectors[r] for c, r in rows.items()},
                         {c: rng.uniform(1, 5, len(r)) for c, r in rows.items()}, ModelSettings(k=k))


def demographic_model(rng, n=150, dim=16, k=10):
    """One sample per rating: vectors repeated many times, in survey order."""
    vectors = unit(rng, n, dim)
    rows = {c: np.sort(rng.integers(0, n, size=6 * n)) for c in CATEGORIES}
    return ExportedModel({c: vectors[rows[c]] for c in CATEGORIES},
                         {c: rng.integers(1, 6, 6 * n).astype(float) for c in CATEGORIES},
                         ModelSettings(clip_model="x", k=k))


@pytest.mark.parametrize("build,k,weighting", [
    (average_model, 10, "softmax10**"), (average_model, 40, "divbysum"), (average_model, 3, "fixed"),
    (demographic_model, 10, "softmax10**"), (demographic_model, 40, "softmax**8"),
    (sparse_model, 40, "softmax10**"), (sparse_model, 1, "softmax"), (clustered_model, 10, "softmax10**"),
])
def test_equals_per_category_knn(build, k, weighting):
    rng = np.random.default_rng(k)
    model = build(rng)
    model.settings.weighting = weighting
    model.settings.k = k
    queries = unit(rng, 700, model.dim)
    scorer = MultiScorer(model, block_size=128)
    predicted, neighbours = scorer.predict_with_neighbours(queries)
    assert predicted.shape == (700, 5)
    for column, category in enumerate(CATEGORIES):
        distinct, rows = np.unique(model.vectors[category], axis=0, return_inverse=True)
        reference = KNNRegressor(k, weighting).fit(distinct, model.scores[category], rows.ravel())
        np.testing.assert_allclose(predicted[:, column], reference.predict(queries), rtol=0, atol=1e-12)
        found = reference.kneighbors(queries)
        np.testing.assert_array_equal(neighbours[category].index, found.index)
        np.testing.assert_allclose(neighbours[category].similarity, found.similarity, rtol=0, atol=1e-14)


def test_stored_query_rows_are_searched_as_their_unit_rows(screen):
    """Queries as UnitRows of stored float16 rows (each search block widens its own) find the neighbours, bit for bit,
    of the float64 unit rows, over several steps of blocks and threads."""
    rng = np.random.default_rng(8)
    scorer = MultiScorer(average_model(rng, dim=24), block_size=16, threads=2)
    stored = rng.normal(size=(300, 24)).astype(np.float16)
    got, want = scorer.neighbours(UnitRows(stored)), scorer.neighbours(np.asarray(UnitRows(stored)))
    for category in CATEGORIES:
        np.testing.assert_array_equal(got[category].index, want[category].index)
        assert got[category].similarity.tobytes() == want[category].similarity.tobytes()


def test_equals_knn_fitted_on_the_exported_rows():
    """Without repeated vectors, the KNN fitted on the file's rows as they are gives the same."""
    rng = np.random.default_rng(7)
    model = average_model(rng, k=40)
    queries = unit(rng, 300, model.dim)
    predicted = MultiScorer(model).predict(queries)
    for column, category in enumerate(CATEGORIES):
        reference = KNNRegressor(40).fit(model.vectors[category], model.scores[category])
        np.testing.assert_allclose(predicted[:, column], reference.predict(queries), rtol=0, atol=1e-12)


def test_vectors_are_deduplicated_across_categories():
    rng = np.random.default_rng(1)
    scorer = MultiScorer(demographic_model(rng, n=50))
    assert scorer.n_vectors <= 50
    distinct, positions = distinct_rows([np.eye(3), np.eye(3)[[2, 2, 0]]])
    assert len(distinct) == 3 and positions[1].tolist() == [2, 2, 0]


def test_k_larger_than_a_category_uses_all_its_samples():
    rng = np.random.default_rng(2)
    vectors = unit(rng, 8, 4)
    model = ExportedModel({"walkability": vectors, "safety": vectors[:3]},
                          {"walkability": np.arange(8.0), "safety": np.array([1.0, 2.0, 3.0])},
                          ModelSettings(k=5))
    queries = unit(rng, 20, 4)
    predicted = MultiScorer(model).predict(queries)
    want = KNNRegressor(5).fit(vectors[:3], [1.0, 2.0, 3.0]).predict(queries)
    np.testing.assert_allclose(predicted[:, 1], want, rtol=0, atol=1e-12)


def test_bare_model_uses_published_defaults():
    rng = np.random.default_rng(3)
    model = average_model(rng)
    scorer = MultiScorer(ExportedModel(model.vectors, model.scores, None))
    assert (scorer.k, scorer.weighting) == (40, "softmax10**")


def test_similar_lists_distinct_vectors_with_mean_ratings():
    rng = np.random.default_rng(5)
    model = demographic_model(rng, n=40)
    scorer = MultiScorer(model)
    query = model.vectors["walkability"][0]
    found = scorer.similar(query, 4)
    assert len(found) == 4 and found[0].similarity == pytest.approx(1.0)
    assert [f.similarity for f in found] == sorted((f.similarity for f in found), reverse=True)
    same = np.all(model.vectors["walkability"] == query, axis=1)
    assert found[0].ratings["walkability"] == pytest.approx(model.scores["walkability"][same].mean())
    assert found[0].counts["walkability"] == same.sum()


def test_query_dimension_mismatch_is_refused():
    scorer = MultiScorer(average_model(np.random.default_rng(6)))
    with pytest.raises(PerceptError, match="dimensions"):
        scorer.predict(np.ones((2, 7)))


def test_check_encoder_refuses_mismatches():
    settings = ModelSettings(clip_model="percept:tiny", weights_id="w1")
    check_encoder(settings, 64, "percept:tiny", 64, "w1")
    with pytest.raises(PerceptError, match="built with CLIP model"):
        check_encoder(settings, 64, "open_clip:ViT-B-32", 64)
    with pytest.raises(PerceptError, match="dimensional"):
        check_encoder(settings, 512, "percept:tiny", 64)
    with pytest.raises(PerceptError, match="weights"):
        check_encoder(settings, 64, "percept:tiny", 64, "w2")
    with pytest.raises(PerceptError, match="environmental"):
        check_encoder(ModelSettings(environmental_method="append"), 64, "percept:tiny", 64)
