"""The model's C kernels against numpy: conversions, norms, and the search with and without F16C/AVX-512."""

from __future__ import annotations

import numpy as np
import pytest
from test_exact_search import brute_force

from percept.model import _kernels
from percept.model.knn import KNNRegressor
from percept.model.unit_rows import UnitRows, row_norms

SPECIAL = np.array([6e-8, -6e-8, 6.1e-5, 65504, -65504, np.inf, -np.inf, np.nan, -0.0, 0.0, 1.0, -2.5],
                   dtype=np.float16)


@pytest.fixture(params=[True, False], ids=["vector-extensions", "portable"])
def extensions(request):
    previous = _kernels.vector_extensions(request.param)
    yield request.param
    _kernels.vector_extensions(previous)


def test_gather_converts_float16_exactly(extensions):
    rng = np.random.default_rng(0)
    stored = rng.normal(scale=3, size=(50, 37)).astype(np.float16)
    stored[7, :len(SPECIAL)] = SPECIAL
    rows = np.array([7, 0, 49, 7, 3])
    out = np.empty((len(rows), 37), dtype=np.float32)
    _kernels.gather_float32(stored, rows, out)
    np.testing.assert_array_equal(out, stored[rows].astype(np.float32))
    assert np.signbit(out[0, 8]) and not np.signbit(out[0, 9])


def test_gather_refuses_rows_outside_the_matrix_and_wrong_types():
    stored = np.zeros((4, 8), dtype=np.float16)
    out = np.empty((1, 8), dtype=np.float32)
    with pytest.raises(IndexError, match="outside 0..3"):
        _kernels.gather_float32(stored, np.array([4]), out)
    with pytest.raises(TypeError, match="stored must be"):
        _kernels.gather_float32(stored.astype(np.float64), np.array([0]), out)
    with pytest.raises(ValueError, match="out has shape"):
        _kernels.gather_float32(stored, np.array([0, 1]), out)


@pytest.mark.parametrize("dim", [1, 31, 32, 1024, 1030])
def test_norms_do_not_depend_on_the_stored_type(dim, extensions):
    rows = np.random.default_rng(dim).normal(size=(20, dim)).astype(np.float16)
    norms = row_norms(rows)
    np.testing.assert_array_equal(norms, row_norms(rows.astype(np.float32)))
    np.testing.assert_array_equal(norms, row_norms(rows.astype(np.float64)))
    wide = rows.astype(np.float64)
    np.testing.assert_allclose(norms, np.sqrt(np.einsum("ij,ij->i", wide, wide)), rtol=1e-15)


@pytest.mark.parametrize("stored", ["float16 rows", "float64 unit rows"])
@pytest.mark.parametrize("dim", [24, 1030])
def test_search_is_the_same_with_and_without_vector_extensions(dim, stored, screen):
    """Float16 rows re-ranked (and float64 rows re-screened from float16 copies, on tiles) by the F16C/AVX-512
    code and by the portable code: same neighbours, both exact."""
    rng = np.random.default_rng(dim)
    raw = rng.normal(size=(700, dim)).astype(np.float16)
    raw[rng.integers(0, 600, 40)] = raw[rng.integers(0, 600, 40)]  # equal vectors in different rows
    unit = UnitRows(raw) if stored == "float16 rows" else np.asarray(UnitRows(raw))
    train, test = rng.permutation(600), np.arange(600, 700)
    results = []
    for enabled in (True, False):
        previous = _kernels.vector_extensions(enabled)
        try:
            model = KNNRegressor(30, block_size=32).fit(unit, rng.uniform(1, 5, 600), train)
            results.append(model.kneighbors(unit, rows=test))
        finally:
            _kernels.vector_extensions(previous)
    normalised = np.asarray(UnitRows(raw))
    index, sims = brute_force(normalised, train, normalised[test], 30)
    for found in results:
        np.testing.assert_array_equal(found.index, index)
        np.testing.assert_allclose(found.similarity, sims, rtol=0, atol=1e-14)


def test_selection_refuses_arrays_of_another_space():
    values = np.zeros((2, 5), dtype=np.float32)
    queries = np.zeros((2, 4))
    tables = (np.zeros((1, 6), np.int64), np.ones((1, 5), np.int64), np.arange(5), np.array([0, 5]))
    args = [values, queries, np.zeros(2), np.zeros((5, 4)), None, None, np.array([0]), np.array([5]), np.array([1]),
            np.array([1]), np.array([5]), np.array([0, 5]), np.array([2]), *tables]
    outputs = (np.empty((2, 2), np.int64),), (np.empty((2, 2)),)
    with pytest.raises(ValueError, match="outputs need"):
        _kernels.select_neighbours(*args, (np.empty((2, 3), np.int64),), (np.empty((2, 3)),), None, None, None, None)
    with pytest.raises(ValueError, match="do not describe one search space"):
        _kernels.select_neighbours(*args[:3], np.zeros((5, 3)), *args[4:], *outputs, None, None, None, None)
    with pytest.raises(IndexError):
        _kernels.select_neighbours(*args[:4], np.array([0, 1, 2, 3, 9]), *args[5:], *outputs, None, None, None, None)
    with pytest.raises(ValueError, match="refine and refine_eps go together"):
        _kernels.select_neighbours(*args, *outputs, np.zeros((5, 4), np.float16), None, None, None)
    with pytest.raises(ValueError, match="refine needs"):
        _kernels.select_neighbours(*args, *outputs, np.zeros((4, 4), np.float16), np.zeros(2), None, None)
    with pytest.raises(ValueError, match="tile_maxima and tile_patterns go together"):
        _kernels.select_neighbours(*args, *outputs, None, None, np.zeros((2, 1), np.float32), None)
    with pytest.raises(ValueError, match="tile_maxima needs"):
        _kernels.select_neighbours(*args, *outputs, None, None, np.zeros((2, 2), np.float32), np.zeros(2, np.int64))


@pytest.mark.parametrize("k", [17, 250, 600])
def test_ordering_of_many_neighbours_with_ties(k, screen):
    """Hundreds of neighbours, most of them tied (few distinct vectors, rated many times): the order is
    similarity descending, then training sample ascending, as the brute force has it."""
    rng = np.random.default_rng(k)
    distinct = rng.normal(size=(40, 16))
    vectors = np.asarray(UnitRows(distinct[rng.integers(0, 40, 800)]))
    train, test = rng.permutation(700), np.arange(700, 800)
    found = KNNRegressor(k).fit(vectors, rng.uniform(1, 5, 700), train).kneighbors(vectors, rows=test)
    index, sims = brute_force(vectors, train, vectors[test], k)
    np.testing.assert_array_equal(found.index, index)
    np.testing.assert_allclose(found.similarity, sims, rtol=0, atol=1e-14)
