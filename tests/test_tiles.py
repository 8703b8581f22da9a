"""The AMX tile screen: packing, bfloat16 products against numpy, and the error bound on hard sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_exact_search import brute_force, hard_sums

from percept.model import kernels, screens
from percept.model.knn import KNNRegressor, l2_normalise
from percept.model.screens import (
    Float32Screen,
    TileScreen,
    absolute_error,
    aligned_empty,
    column_screen,
    gamma,
    use_tiles,
)

pytestmark = pytest.mark.amx


@pytest.fixture(autouse=True)
def tiles_here():
    if not kernels.tiles_available():
        pytest.skip("no AMX tiles here (this CPU has none, or the compiled kernels are not in use)")


def bfloat16(values) -> np.ndarray:
    """Float32 values rounded to bfloat16 (nearest, ties to even; subnormals to zero), as float64."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    rounded = np.where(bits & 0x7F800000 == 0, bits & 0x80000000, rounded)
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def packed_columns(stored: np.ndarray, rows: np.ndarray,
                   scales: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(packed, residuals, lengths) of columns ``stored[rows] * scales``."""
    packed = np.empty(kernels.tiles().packed_size(len(rows), stored.shape[1]), dtype=np.uint16)
    residuals, lengths = np.empty(len(rows)), np.empty(len(rows))
    kernels.tiles().pack_columns(stored, rows, scales, packed, residuals, lengths)
    return packed, residuals, lengths


def output(rows: int, n: int, aligned: bool) -> np.ndarray:
    """A float32 (rows, n) buffer starting on a 64-byte boundary, or 16 bytes past one."""
    if aligned:
        return aligned_empty((rows, n), np.float32)
    return aligned_empty(rows * n + 4, np.float32)[4:].reshape(rows, n)


def screened(queries: np.ndarray, columns32: np.ndarray, aligned: bool = False):
    """(out, query norms, query residuals, column residuals, tile maxima, float64 norms, largest elements) of the
    raw kernels, written to an output buffer on a 64-byte boundary or off one."""
    n = len(columns32)
    packed, column_residuals, _ = packed_columns(columns32, np.arange(n), np.ones(n, np.float32))
    out = output(len(queries), n, aligned)
    norms, residuals = np.empty(len(queries)), np.empty(len(queries))
    maxima = np.empty((len(queries), -(-len(columns32) // 16)), dtype=np.float32)
    norms64, largest = np.empty(len(queries)), np.empty(len(queries))
    kernels.tiles().screen(queries, packed, out, norms, residuals, maxima, norms64, largest)
    return out, norms, residuals, column_residuals, maxima, norms64, largest


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("rows, n, dim", [(1, 1, 1), (15, 17, 31), (16, 32, 32), (33, 600, 70), (40, 530, 1030),
                                          (35, 80, 64)])
def test_screen_sums_the_bfloat16_products(rows, n, dim, aligned):
    """Every shape (tile borders, dimensions not a multiple of 32; whole tiles streamed to an aligned output, or
    stored to one off a cache line): the bfloat16 products, summed in float32."""
    rng = np.random.default_rng(dim)
    queries = rng.normal(size=(rows, dim))
    columns32 = rng.normal(size=(n, dim)).astype(np.float32)
    out, norms, residuals, column_residuals, maxima, norms64, largest = screened(queries, columns32, aligned)
    q32 = queries.astype(np.float32).astype(np.float64)
    bq, bx = bfloat16(queries.astype(np.float32)), bfloat16(columns32)
    exact = bq @ bx.T
    np.testing.assert_array_less(np.abs(out - exact), gamma(dim, 2.0 ** -24) * (np.abs(bq) @ np.abs(bx).T) + 1e-30)
    np.testing.assert_allclose(norms, np.linalg.norm(q32, axis=1), rtol=1e-14)
    np.testing.assert_allclose(residuals, np.linalg.norm(q32 - bq, axis=1), rtol=1e-14)
    np.testing.assert_allclose(column_residuals, np.linalg.norm(columns32.astype(np.float64) - bx, axis=1), rtol=1e-14)
    np.testing.assert_allclose(norms64, np.linalg.norm(queries, axis=1), rtol=1e-14)
    np.testing.assert_array_equal(largest, np.abs(queries).max(axis=1))
    padded = np.pad(out, ((0, 0), (0, -n % 16)), constant_values=-np.inf)  # the last tile: its own columns only
    np.testing.assert_array_equal(maxima, padded.reshape(rows, -1, 16).max(axis=2))


def test_screen_buffers_start_on_a_tile_row():
    """The packed columns and the search's similarity buffers start on a 64-byte boundary, as the tile loads and
    the streamed stores want them; aligned_empty gives the shape and type asked for."""
    rng = np.random.default_rng(10)
    vectors = l2_normalise(rng.normal(size=(300, 40)))
    space = KNNRegressor(5).fit(vectors, np.ones(300)).space_
    values, _ = space.buffers(7)
    assert space.screen.packed.ctypes.data % 64 == 0 and values.ctypes.data % 64 == 0
    for shape in (1, 17, (3, 5), (2, 3, 4)):
        array = aligned_empty(shape, np.float32)
        assert array.ctypes.data % 64 == 0 and array.flags.c_contiguous
        assert array.shape == np.empty(shape).shape and array.dtype == np.float32


def test_streamed_and_stored_tiles_hold_the_same_bits():
    """Whole tiles streamed to an aligned output and tiles stored to an unaligned one: the same values and maxima."""
    rng = np.random.default_rng(9)
    queries, columns32 = rng.normal(size=(48, 96)), rng.normal(size=(160, 96)).astype(np.float32)
    streamed, stored = screened(queries, columns32, aligned=True), screened(queries, columns32, aligned=False)
    np.testing.assert_array_equal(streamed[0].view(np.uint32), stored[0].view(np.uint32))
    np.testing.assert_array_equal(streamed[4].view(np.uint32), stored[4].view(np.uint32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_columns_pack_straight_from_stored_rows(dtype):
    """Stored rows picked and scaled in float32 as they are packed: the same tiles as from the float32 columns."""
    rng = np.random.default_rng(5)
    stored = rng.normal(size=(90, 77)).astype(dtype)
    rows = rng.integers(0, 90, 40)
    scales = rng.uniform(0.1, 2, 40).astype(np.float32)
    columns32 = stored[rows].astype(np.float32) * scales[:, None]
    packed, residuals, lengths = packed_columns(stored, rows, scales)
    want, want_residuals, _ = packed_columns(columns32, np.arange(40), np.ones(40, np.float32))
    np.testing.assert_array_equal(packed, want)
    np.testing.assert_array_equal(residuals, want_residuals)
    np.testing.assert_allclose(lengths, np.linalg.norm(columns32.astype(np.float64), axis=1), rtol=1e-14)


def test_subnormal_values_round_to_zero_and_count_as_residual():
    tiny = np.float32(1e-39)  # below 2^-126: a float32 subnormal
    columns32 = np.array([[tiny, 1.0, -tiny, 0.5]], dtype=np.float32)
    queries = np.array([[1e-39, 2.0, 1.0, 1.0]])
    out, _, residuals, column_residuals, *_ = screened(queries, columns32)
    assert out[0, 0] == np.float32(2.5)
    assert column_residuals[0] == pytest.approx(np.sqrt(2) * float(tiny), rel=1e-12)
    assert residuals[0] == pytest.approx(float(np.float32(1e-39)), rel=1e-12)


def test_tile_bound_holds_on_hard_sums():
    """Cancellation over 1024 dimensions and values halfway between bfloat16 numbers: within the stated bound."""
    rng = np.random.default_rng(2)
    dim = 1024
    queries, vectors = hard_sums(rng, dim)
    halfway = (1 + 2.0 ** -8) * np.sign(rng.normal(size=dim)) / np.sqrt(dim * (1 + 2.0 ** -8) ** 2)
    queries[-1] = halfway  # every element a tie for bfloat16 rounding
    vectors32 = vectors.astype(np.float32)
    screen = TileScreen(vectors32, np.arange(len(vectors32)), np.ones(len(vectors32), dtype=np.float32))
    out = np.empty((len(queries), len(vectors)), dtype=np.float32)
    eps, norms = screen.similarities(queries, out,
                                     np.empty((len(queries), -(-len(vectors) // 16)), dtype=np.float32))
    error = np.abs(out - queries @ vectors.T)
    assert (error <= eps[:, None]).all()
    exact = np.array([math.sqrt(math.fsum(x * x for x in row)) for row in queries])
    assert (norms >= exact).all() and (norms <= exact * (1 + 2.0 ** -40)).all()  # bounds on the norms, tight
    assert (eps < 0.01).all()
    assert (error.max(axis=1) > eps / 100).any()  # the bound is not vacuous: some errors come near it


def test_float16_refining_bound_holds_on_hard_sums():
    """Candidates re-screened in float32 from float16 copies of the columns stay within the stated bound."""
    dim = 1024
    queries, vectors = hard_sums(np.random.default_rng(4), dim)
    vectors32 = vectors.astype(np.float32)
    copies, residual = screens.float16_copies(vectors32, chunk=100)
    assert residual == pytest.approx(np.linalg.norm(vectors32.astype(np.float64) - copies, axis=1).max(), rel=1e-12)
    refined = queries.astype(np.float32) @ copies.astype(np.float32).T
    norms = np.linalg.norm(queries, axis=1)
    bound = absolute_error(dim, norms, 1 + 2.0 ** -22) + screens.float16_error(dim, norms * (1 + 2.0 ** -24),
                                                                              1 + 2.0 ** -22, residual)
    error = np.abs(refined - queries @ vectors.T)
    assert (error <= bound[:, None]).all()
    assert (bound < 0.001).all()


def test_float64_columns_are_refined_from_float16_copies_on_tiles():
    """A scorer's float64 vectors (re-ranked from 8-byte rows) get float16 copies; float16 storage does not."""
    rng = np.random.default_rng(6)
    vectors = l2_normalise(rng.normal(size=(300, 64)))
    assert KNNRegressor(5).fit(vectors, np.ones(300)).space_.refine16.dtype == np.float16
    from percept.model.unit_rows import UnitRows
    assert KNNRegressor(5).fit(UnitRows(vectors.astype(np.float16)), np.ones(300)).space_.refine16 is None


def test_queries_out_of_range_are_left_to_float64():
    """Elements too large for bfloat16 products: similarity 0, infinite bound, and the search stays exact."""
    rng = np.random.default_rng(3)
    vectors = l2_normalise(rng.normal(size=(300, 40)))
    queries = rng.normal(size=(5, 40))
    queries[2] *= 2.0 ** 60
    screen = column_screen(vectors.astype(np.float32))
    out, maxima = np.empty((5, 300), dtype=np.float32), np.empty((5, 19), dtype=np.float32)
    eps, _ = screen.similarities(queries, out, maxima)
    assert np.isinf(eps[2]) and (out[2] == 0).all() and (maxima[2] == 0).all()
    assert np.isfinite(eps[[0, 1, 3, 4]]).all()
    found = KNNRegressor(10).fit(vectors, np.ones(300)).kneighbors(queries)
    index, similarity = brute_force(vectors, np.arange(300), queries, 10)
    np.testing.assert_array_equal(found.index, index)
    np.testing.assert_allclose(found.similarity, similarity, rtol=1e-13)


@pytest.mark.parametrize("k, seed", [(1, 1), (1, 2), (3, 3), (10, 1)])
def test_tiles_are_the_first_bound_groups_and_the_search_stays_exact(k, seed):
    """A scorer over five categories whose column blocks do not align with tiles of 16: the tiles' maxima
    give the first bound (tiles spanning two blocks serve no category) and the neighbours are the brute force's,
    on every compiled build."""
    from test_exact_search import brute_predict
    from test_kernels import implementations, running

    from percept.categories import CATEGORIES
    from percept.model.io import ExportedModel, ModelSettings
    from percept.model.scoring import MultiScorer

    rng = np.random.default_rng(seed)
    pool = l2_normalise(rng.normal(size=(3000, 48)))
    vectors = {c: pool[np.sort(rng.choice(3000, 2000 + 150 * i, replace=False))] for i, c in enumerate(CATEGORIES)}
    scores = {c: rng.uniform(1, 5, len(vectors[c])) for c in CATEGORIES}
    queries = l2_normalise(rng.normal(size=(300, 48)))
    want = np.column_stack([brute_predict(vectors[c], np.arange(len(vectors[c])), scores[c], queries, k)
                            for c in CATEGORIES])
    for build in [name for name in implementations() if name != "pure"]:
        with running(build):
            scorer = MultiScorer(ExportedModel(vectors, scores, ModelSettings(k=k)))
            assert scorer.space.tile_groups([k] * 5) and (scorer.space.tile_patterns == 0).any()
            np.testing.assert_allclose(scorer.predict(queries), want, rtol=1e-12, err_msg=build)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_queries_with_nan_or_infinity_are_refused(bad, tmp_path):
    """A query row holding NaN or an infinity: largest is NaN, and the search refuses it in one clear error."""
    from percept.errors import PerceptError

    rng = np.random.default_rng(8)
    vectors = l2_normalise(rng.normal(size=(100, 40)))
    queries = rng.normal(size=(3, 40))
    queries[1, 33] = bad
    *_, largest = screened(queries, vectors.astype(np.float32))
    assert np.isnan(largest[1]) and np.isfinite(largest[[0, 2]]).all()
    with pytest.raises(PerceptError, match="NaN or infinite"):
        KNNRegressor(3).fit(vectors, np.ones(100)).kneighbors(queries)


def test_use_tiles_switches_the_screen():
    columns32 = np.eye(4, dtype=np.float32)
    previous = use_tiles(False)
    try:
        assert isinstance(column_screen(columns32), Float32Screen)
        assert use_tiles(True) is False
        assert isinstance(column_screen(columns32), TileScreen)
    finally:
        use_tiles(previous)
    assert isinstance(column_screen(columns32 * np.float32(screens.TILE_RANGE)), Float32Screen)


def test_tile_bound_is_wider_than_the_float32_bound_but_small():
    norms = np.ones(1)
    tiles = screens.tile_error(1024, norms, np.full(1, 2.0 ** -9), 1.0, 2.0 ** -9)
    assert absolute_error(1024, norms, 1.0)[0] < tiles[0] < 0.005


def test_kernels_refuse_arrays_that_do_not_agree():
    stored, rows, ones = np.zeros((20, 8), dtype=np.float32), np.arange(20), np.ones(20, np.float32)
    with pytest.raises(ValueError, match="20 columns need"):
        kernels.tiles().pack_columns(stored, rows, ones, np.empty(10, np.uint16), np.empty(20), np.empty(20))
    with pytest.raises(TypeError, match="stored must be"):
        kernels.tiles().pack_columns(stored.astype(np.float64), rows, ones, np.empty(1024, np.uint16),
                                     np.empty(20), np.empty(20))
    with pytest.raises(IndexError, match="row 20 is outside 0..19"):
        kernels.tiles().pack_columns(stored, rows + 1, ones, np.empty(1024, np.uint16), np.empty(20), np.empty(20))
    packed = np.empty(kernels.tiles().packed_size(20, 8), np.uint16)
    with pytest.raises(ValueError, match="do not agree"):
        kernels.tiles().screen(np.zeros((3, 8)), packed, np.empty((3, 33), np.float32), np.empty(3), np.empty(3),
                               np.empty((3, 3), np.float32), np.empty(3), np.empty(3))
    with pytest.raises(ValueError, match="do not agree"):
        kernels.tiles().screen(np.zeros((3, 8)), packed, np.empty((3, 20), np.float32), np.empty(3), np.empty(3),
                               np.empty((3, 1), np.float32), np.empty(3), np.empty(3))
