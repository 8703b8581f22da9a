"""Quotient rows: float64 unit rows normalised from float16 rows, kept for re-ranking as float16 numerators and a
divisor each, and rebuilt exactly as they are read, in every compiled build; found only where every element comes
back, and the search's results bit for bit those of the float64 rows."""

from __future__ import annotations

import numpy as np
import pytest
from test_kernels import implementations, running, same_bits, same_selection, selection_call

from percept.model import kernels
from percept.model.exact_search import THREADS, SearchSpace, search, worker_pool
from percept.model.knn import l2_normalise
from percept.model.screens import absolute_error, float16_copies, float16_error, numerator_error
from percept.model.unit_rows import UnitRows

COMPILED = [build for build in implementations() if build != "pure"]


@pytest.fixture(params=COMPILED or [pytest.param(None, marks=pytest.mark.skip(reason="kernels not built"))])
def build(request):
    """Each compiled build of the loops this CPU runs, in use while the test runs."""
    with running(request.param):
        yield request.param


def found_quotients(rows: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(-1 or the first row with none, numerators, divisors) for all of ``rows``."""
    numerators, divisors = np.empty(rows.shape, np.float16), np.empty(len(rows))
    return kernels.quotient_rows(rows, np.arange(len(rows)), numerators, divisors), numerators, divisors


def special_float16_rows(rng, dim: int) -> np.ndarray:
    """Normal float16 rows, and rows of zeros, of -0, of one large element, of subnormals and of tiny values."""
    raw = rng.normal(size=(60, dim)).astype(np.float16)
    raw[0] = 0
    raw[1] = -0.0
    raw[2] = 0
    raw[2, dim // 2] = -65504
    raw[3] = rng.integers(1, 1024, dim) * np.float16(2.0 ** -24)  # subnormals only
    raw[4] *= np.float16(1e-3)
    raw[5, : dim // 2] = np.float16(6e-8)  # subnormals beside normal values
    return raw


@pytest.mark.parametrize("dim", [1, 31, 32, 1030])
def test_unit_rows_of_float16_rows_come_back_exactly(build, dim):
    raw = special_float16_rows(np.random.default_rng(dim), dim)
    unit = np.asarray(UnitRows(raw))
    failed, numerators, divisors = found_quotients(unit)
    assert failed == -1
    assert ((numerators.astype(np.float64) / divisors[:, None]) == unit).all()  # numpy's division, independent


def test_quotients_by_any_divisor_come_back_exactly(build):
    """Every finite float16 numerator (subnormals included) over divisors from 2^-20 to 2^20: the rebuilt
    elements are numpy's correctly rounded quotients."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 0x7c00, size=(3000, 64), dtype=np.uint16) | (rng.integers(0, 2, (3000, 64)) << 15)
    numerators = bits.astype(np.uint16).view(np.float16)
    divisors = 2.0 ** rng.uniform(-20, 20, 3000)
    rows = numerators.astype(np.float64) / divisors[:, None]
    failed, found, found_divisors = found_quotients(rows)
    assert failed == -1
    assert ((found.astype(np.float64) / found_divisors[:, None]) == rows).all()


def test_quotient_vectors_are_the_correctly_rounded_quotients(build):
    """Rebuilt as the selection reads them (1 / d in two parts, one fused multiply-add), every finite float16
    numerator of either sign over 200 divisors of random bits gives numpy's correctly rounded quotient, bit for bit
    (the sign of zero included)."""
    rng = np.random.default_rng(11)
    halves = np.arange(0x7c00, dtype=np.uint16)
    numerators = np.concatenate([halves, halves | 0x8000]).view(np.float16)[None, :].repeat(200, axis=0)
    divisors = rng.uniform(0.5, 2.0, 200) * 2.0 ** rng.integers(-20, 21, 200)
    rebuilt = np.empty(numerators.shape)
    kernels.quotient_vectors(numerators, np.arange(200), divisors, rebuilt)
    want = numerators.astype(np.float64) / divisors[:, None]
    assert np.array_equal(rebuilt.view(np.uint64), want.view(np.uint64))


def test_rows_that_are_not_quotients_are_refused(build):
    rng = np.random.default_rng(3)
    assert found_quotients(l2_normalise(rng.normal(size=(5, 300))))[0] == 0  # float64 rows from float64 values
    unit = np.asarray(UnitRows(rng.normal(size=(20, 300)).astype(np.float16)))
    unit[7, 11] = np.nextafter(unit[7, 11], 1.0)  # one element one ulp off
    assert found_quotients(unit)[0] == 7


def test_search_reranks_quotient_rows_with_the_bits_of_the_float64_rows(build):
    """A model's float64 unit rows normalised from float16 rows are re-ranked from their numerators: the same
    neighbours and similarities, bit for bit, as the pure path re-ranking the float64 rows; one row that is not
    a quotient keeps the float64 rows."""
    rng = np.random.default_rng(11)
    unit = np.asarray(UnitRows(rng.normal(size=(900, 1030)).astype(np.float16)))
    queries = np.asarray(UnitRows(rng.normal(size=(60, 1030)).astype(np.float16)))
    samples = [np.concatenate([np.arange(900), rng.integers(0, 900, 50)]), np.arange(0, 900, 2)]
    off = unit.copy()
    off[5, 0] = np.nextafter(off[5, 0], 1.0)
    for rows, quotients in ((unit, True), (off, False)):
        space = SearchSpace(rows, np.arange(900), samples)
        assert (space.row_divisors is not None) == quotients
        assert (space.rerank_matrix.dtype == np.float16) == quotients
        # on tiles, candidates are re-screened from the numerators themselves (no float16 copies are made)
        assert (space.refine_scales is not None) == (quotients and kernels.tiles_available())
        if space.refine_scales is not None:
            assert space.refine16 is space.rerank_matrix
        found = search(space, queries, 25)
        with running("pure"):
            want = search(SearchSpace(rows, np.arange(900), samples), queries, 25)
        for got, expected in zip(found, want):
            np.testing.assert_array_equal(got.index, expected.index)
            same_bits(got.similarity, expected.similarity)


def quotient_call(rng, queries: int = 30, k: int = 20) -> tuple[dict, SearchSpace]:
    """A selection call over two categories of quotient rows (float16 numerators and row divisors)."""
    unit = np.asarray(UnitRows(rng.normal(size=(400, 24)).astype(np.float16)))
    with running("vector"):  # quotient rows are found by the compiled kernels
        space = SearchSpace(unit, np.arange(400), [np.arange(400), np.arange(0, 260)])
    assert space.row_divisors is not None
    return selection_call(space, l2_normalise(rng.normal(size=(queries, 24))), k), space


def test_selection_of_quotient_rows_equals_the_pure_path(c_kernels):
    rng = np.random.default_rng(2)
    c_call, space = quotient_call(rng)
    pure_call = dict(c_call, index=tuple(np.empty_like(a) for a in c_call["index"]),
                     similarity=tuple(np.empty_like(a) for a in c_call["similarity"]))
    c_kernels.select_neighbours(**c_call)
    with running("pure"):
        kernels.select_neighbours(**pure_call)
    same_selection(c_call, pure_call)


@pytest.mark.parametrize("change, message", [
    ({"row_divisors": np.ones(399)}, "one per matrix row"),
    ({"divisors": np.ones(400)}, "and no divisors"),
    ({"row_divisors": np.zeros(400)}, "positive and finite"),
    ({"row_divisors": np.full(400, np.inf)}, "positive and finite"),
])
def test_selection_refuses_row_divisors_that_do_not_fit(c_kernels, change, message):
    call, _ = quotient_call(np.random.default_rng(4), queries=3, k=5)
    c_kernels.select_neighbours(**call)  # the call as it is: valid
    with pytest.raises(ValueError, match=message):
        c_kernels.select_neighbours(**dict(call, **change))


def test_selection_refuses_row_divisors_of_a_float64_matrix(c_kernels):
    call, space = quotient_call(np.random.default_rng(4), queries=3, k=5)
    wide = dict(call, matrix=space.source, matrix_rows=space.column_rows)
    with pytest.raises(ValueError, match="go with float16 numerators"):
        c_kernels.select_neighbours(**wide)


def test_rescreening_from_numerators_stays_within_its_bound():
    """Candidates re-screened from quotient rows' numerators (float32 sums of the float32 queries times the float16
    numerators, over float32 reciprocals of the divisors) stay within numerator_error of the float64 similarities,
    on long sums with cancellation and on rows of mixed scales."""
    rng = np.random.default_rng(17)
    dim = 1024
    raw = (rng.normal(size=(300, dim)) * np.logspace(0, -4, dim)).astype(np.float16)
    raw[:20] = (rng.normal(size=(20, dim)) * 60).astype(np.float16)  # large numerators
    unit = np.asarray(UnitRows(raw))
    queries = l2_normalise(np.vstack([unit[:30] + 1e-4 * rng.normal(size=(30, dim)),
                                      rng.normal(size=(30, dim)) * np.logspace(-6, 0, dim)]))
    with running("vector"):
        numerators, divisors = found_quotient_rows(unit)
    rescreened = ((queries.astype(np.float32) @ numerators.astype(np.float32).T)
                  * (1.0 / divisors).astype(np.float32)).astype(np.float32)
    norms = np.linalg.norm(queries, axis=1) * (1 + 2.0 ** -40)
    vector_norm = float(np.linalg.norm(unit.astype(np.float32).astype(np.float64), axis=1).max()) * (1 + 2.0 ** -23)
    bound = absolute_error(dim, norms, vector_norm) + numerator_error(dim, norms * (1 + 2.0 ** -24), vector_norm)
    error = np.abs(rescreened - queries @ unit.T)
    assert (error <= bound[:, None]).all()
    _, residual = float16_copies(unit.astype(np.float32))
    copies = absolute_error(dim, norms, vector_norm) + float16_error(dim, norms * (1 + 2.0 ** -24), vector_norm,
                                                                     residual)
    assert (bound < copies / 3).all()  # far tighter than re-screening from float16 copies of the columns


def found_quotient_rows(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The numerators and divisors of every row of ``unit`` (which must all be quotient rows)."""
    numerators, divisors = np.empty(unit.shape, dtype=np.float16), np.empty(len(unit))
    assert kernels.quotient_rows(unit, np.arange(len(unit)), numerators, divisors) == -1
    return numerators, divisors


def test_selection_refuses_refine_scales_that_do_not_fit(c_kernels):
    call, space = quotient_call(np.random.default_rng(4), queries=3, k=5)
    refined = dict(call, refine=space.rerank_matrix, refine_eps=np.full(3, 1e-5),
                   refine_scales=np.ones(400, np.float32))
    c_kernels.select_neighbours(**refined)  # the call as it is: valid
    with pytest.raises(ValueError, match="one scale per column"):
        c_kernels.select_neighbours(**dict(refined, refine_scales=np.ones(399, np.float32)))
    with pytest.raises(ValueError, match="needs refine"):
        c_kernels.select_neighbours(**dict(call, refine_scales=np.ones(400, np.float32)))


def test_spaces_built_on_every_worker_thread_at_once_find_their_quotient_rows(build):
    """Every worker thread building a search space at the same moment: each finds its quotient rows itself
    rather than waiting on workers that are all busy waiting."""
    rng = np.random.default_rng(13)
    unit = np.asarray(UnitRows(rng.normal(size=(3000, 64)).astype(np.float16)))
    futures = [worker_pool().submit(SearchSpace, unit, np.arange(3000), [np.arange(3000)]) for _ in range(THREADS)]
    for future in futures:
        assert future.result(timeout=120).row_divisors is not None
