"""The model's kernels: conversions, norms and the selection, compiled (vector and portable builds) and pure.

Every build gives the same float64 bits (no fused multiply-adds, one summation order); the compiled selection
refuses tables that do not describe one search space, with a Python exception, before it reads them.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_exact_search import brute_force

from percept.model import kernels, screens
from percept.model.exact_search import SearchSpace
from percept.model.knn import KNNRegressor, l2_normalise
from percept.model.unit_rows import UnitRows, row_norms

SPECIAL = np.array([6e-8, -6e-8, 6.1e-5, 65504, -65504, np.inf, -np.inf, np.nan, -0.0, 0.0, 1.0, -2.5],
                   dtype=np.float16)


@contextlib.contextmanager
def running(implementation: str):
    """Kernels of one implementation while the block runs: a compiled build (``avx512``, ``avx2``,
    ``portable``, or ``vector``: the best the CPU runs), or ``pure`` (numpy)."""
    previous, build = kernels.use_compiled(implementation != "pure"), None
    if implementation != "pure" and kernels.built():
        build = kernels.implementation()
        if implementation in ("vector", "portable"):
            kernels.vector_extensions(implementation == "vector")
        else:
            kernels.use_build(implementation)
    try:
        yield
    finally:
        kernels.use_compiled(previous)
        if build is not None:
            kernels.use_build(build)


def implementations() -> list[str]:
    """The implementations this machine runs: pure everywhere; the compiled builds where they were built: the
    portable one, and the AVX2 and AVX-512 ones where the CPU runs them."""
    found = ["pure"]
    if kernels.built():
        found.append("portable")
        with running("portable"):
            for build in ("avx2", "avx512"):
                try:
                    kernels.use_build(build)
                    found.append(build)
                except ValueError:
                    pass
    return found


def same_bits(a: np.ndarray, b: np.ndarray) -> None:
    """Equal as stored (0.0 and -0.0 differ, NaN equals the same NaN)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("implementation", ["vector", "portable", "pure"])
def test_gather_converts_float16_exactly(implementation):
    rng = np.random.default_rng(0)
    stored = rng.normal(scale=3, size=(50, 37)).astype(np.float16)
    stored[7, :len(SPECIAL)] = SPECIAL
    rows = np.array([7, 0, 49, 7, 3])
    out = np.empty((len(rows), 37), dtype=np.float32)
    with running(implementation):
        kernels.gather_float32(stored, rows, out)
    np.testing.assert_array_equal(out, stored[rows].astype(np.float32))
    assert np.signbit(out[0, 8]) and not np.signbit(out[0, 9])


@pytest.mark.parametrize("implementation", ["compiled", "pure"])
def test_gather_refuses_rows_outside_the_matrix(implementation):
    stored = np.zeros((4, 8), dtype=np.float16)
    out = np.empty((1, 8), dtype=np.float32)
    with running("vector" if implementation == "compiled" else "pure"):
        for rows in (np.array([4]), np.array([-1])):
            with pytest.raises(IndexError, match=r"outside 0\.\.3"):
                kernels.gather_float32(stored, rows, out)


def test_compiled_gather_refuses_wrong_types(c_kernels):
    stored = np.zeros((4, 8), dtype=np.float16)
    out = np.empty((1, 8), dtype=np.float32)
    with pytest.raises(TypeError, match="stored must be"):
        c_kernels.gather_float32(stored.astype(np.float64), np.array([0]), out)
    with pytest.raises(TypeError, match="rows must be"):
        c_kernels.gather_float32(stored, np.array([0], dtype=np.int32), out)
    with pytest.raises(ValueError, match="out has shape"):
        c_kernels.gather_float32(stored, np.array([0, 1]), out)


@pytest.mark.parametrize("dim", [1, 31, 32, 1024, 1030])
def test_norms_do_not_depend_on_the_stored_type(dim):
    rows = np.random.default_rng(dim).normal(size=(20, dim)).astype(np.float16)
    wide = rows.astype(np.float64)
    for implementation in implementations():
        with running(implementation):
            norms = row_norms(rows)
            np.testing.assert_array_equal(norms, row_norms(rows.astype(np.float32)))
            np.testing.assert_array_equal(norms, row_norms(wide))
        np.testing.assert_allclose(norms, np.sqrt(np.einsum("ij,ij->i", wide, wide)), rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_norms_have_the_same_bits_in_every_build(dtype):
    rows = np.random.default_rng(1).normal(size=(300, 1030)).astype(dtype)
    results = {}
    for implementation in implementations():
        with running(implementation):
            results[implementation] = row_norms(rows)
    for norms in results.values():
        same_bits(norms, results["pure"])


def stored_as(raw: np.ndarray, kind: str):
    """The same float16 rows as the search meets them: UnitRows of float16, float32 or float64 storage, or a
    float64, float32 or float16 array of unit rows."""
    storage, dtype = kind.split()
    if storage == "UnitRows":
        return UnitRows(raw.astype(dtype))
    return np.asarray(UnitRows(raw)).astype(dtype)


@pytest.mark.parametrize("kind", ["UnitRows float16", "UnitRows float32", "UnitRows float64", "array float64",
                                  "array float32", "array float16"])
@pytest.mark.parametrize("dim", [24, 1030])
def test_search_gives_the_same_bits_in_every_build(dim, kind, screen):
    """Float16, float32 and float64 rows re-ranked by the AVX2/AVX-512 code, the portable code and the pure
    path: the same neighbours and the same float64 similarities, bit for bit, all exact."""
    rng = np.random.default_rng(dim)
    raw = rng.normal(size=(700, dim)).astype(np.float16)
    raw[rng.integers(0, 600, 40)] = raw[rng.integers(0, 600, 40)]  # equal vectors in different rows
    train, test = rng.permutation(600), np.arange(600, 700)
    scores = rng.uniform(1, 5, 600)
    results = {}
    for implementation in implementations():
        with running(implementation):
            unit = stored_as(raw, kind)  # fresh: norms computed by this implementation
            model = KNNRegressor(30, block_size=32).fit(unit, scores, train)
            results[implementation] = model.kneighbors(unit, rows=test)
    vectors = np.asarray(stored_as(raw, kind), dtype=np.float64)
    index, sims = brute_force(vectors, train, vectors[test], 30)
    for found in results.values():
        np.testing.assert_array_equal(found.index, results["pure"].index)
        same_bits(found.similarity, results["pure"].similarity)
    np.testing.assert_array_equal(results["pure"].index, index)
    np.testing.assert_allclose(results["pure"].similarity, sims, rtol=0, atol=1e-14)


@pytest.mark.parametrize("k", [17, 250, 600])
def test_ordering_of_many_neighbours_with_ties(k, screen):
    """Hundreds of neighbours, most of them tied (few distinct vectors, rated many times): the order is
    similarity descending, then training sample ascending, as the brute force has it."""
    rng = np.random.default_rng(k)
    distinct = rng.normal(size=(40, 16))
    vectors = np.asarray(UnitRows(distinct[rng.integers(0, 40, 800)]))
    train, test = rng.permutation(700), np.arange(700, 800)
    index, sims = brute_force(vectors, train, vectors[test], k)
    for implementation in implementations():
        with running(implementation):
            found = KNNRegressor(k).fit(vectors, rng.uniform(1, 5, 700), train).kneighbors(vectors, rows=test)
        np.testing.assert_array_equal(found.index, index)
        np.testing.assert_allclose(found.similarity, sims, rtol=0, atol=1e-14)


def two_category_space(rng, n: int = 200, dim: int = 12) -> SearchSpace:
    """Two categories over n vectors: one on all of them (twice on some), one on the first 130 (the blocks of
    columns meet inside a tile of 16)."""
    vectors = l2_normalise(rng.normal(size=(n, dim)))
    first = np.concatenate([np.arange(n), rng.integers(0, n, 30)])
    return SearchSpace(vectors, np.arange(n), [first, np.arange(130)])


def selection_call(space: SearchSpace, queries: np.ndarray, k: int = 5, tiles: bool = False) -> dict:
    """Valid keywords of select_neighbours for ``queries``: the space's tables, a float32 screen, and outputs
    (with ``tiles``, maxima of 16 columns and the categories each serves)."""
    values = (queries @ space.source[space.column_rows].T).astype(np.float32)  # within 2^-24 of float64
    tables = space.selection_tables(k, tiles=False)
    ks = np.array([k] * len(space.categories), dtype=np.int64)
    call = dict(tables, values=values, queries=queries, eps=np.full(len(queries), 1e-4), ks=ks,
                index=tuple(np.empty((len(queries), k), np.int64) for _ in ks),
                similarity=tuple(np.empty((len(queries), k)) for _ in ks), refine=None, refine_scales=None)
    if tiles:
        n = space.n_columns
        padded = np.pad(values, ((0, 0), (0, -n % 16)), constant_values=-np.inf)
        call["tile_maxima"] = np.ascontiguousarray(padded.reshape(len(queries), -1, 16).max(axis=2))
        first = np.arange(0, n, 16)
        block = np.searchsorted(space.block_stops, first, side="right")
        whole = np.minimum(first + 16, n) <= space.block_stops[block]
        call["tile_patterns"] = np.where(whole, space.block_patterns[block], 0).astype(np.int64)
    return call


def with_change(call: dict, name: str, change) -> dict:
    """A copy of the call whose ``name`` is ``change(copy of the old value)`` (or the value ``change``)."""
    changed = dict(call)
    old = call.get(name)
    changed[name] = change(old.copy() if isinstance(old, np.ndarray) else old) if callable(change) else change
    return changed


def set_item(where, value):
    def change(array):
        array[where] = value
        return array
    return change


#: (table, change, the exception's type and message): one table that does not describe the space each.
BAD_TABLES = [
    ("values", lambda v: v.astype(np.float64), TypeError, "values must be"),
    ("values", lambda v: np.asfortranarray(v), (ValueError, TypeError), "contiguous"),
    ("queries", lambda q: q[:-1], ValueError, "one row per query"),
    ("eps", lambda e: e[:-1], ValueError, "one row per query"),
    ("eps", set_item(1, np.nan), ValueError, "must not be negative or NaN"),
    ("eps", set_item(0, -1.0), ValueError, "must not be negative or NaN"),
    ("queries", set_item((1, 3), np.inf), ValueError, "queries must be finite"),
    ("queries", set_item((2, 11), np.nan), ValueError, "queries must be finite"),
    ("matrix", lambda m: m[:, :-1].copy(), ValueError, "differ in dimensions"),
    ("matrix", lambda m: m[:10], ValueError, "outside"),
    ("matrix_rows", set_item(7, 10_000), ValueError, r"matrix_rows\[7\] = 10000 is outside"),
    ("matrix_rows", set_item(7, -1), ValueError, "is outside"),
    ("matrix_rows", lambda r: r[:-1], ValueError, "a row for each column"),
    ("matrix_rows", lambda r: r.astype(np.int32), TypeError, "matrix_rows must be"),
    ("divisors", lambda _: np.ones(3), ValueError, "one value per column"),
    ("block_stops", lambda s: s[:-1], ValueError, "one value per block"),
    ("block_stops", set_item(-1, 150), ValueError, "cover every column"),
    ("block_stops", set_item(0, 10_000), ValueError, "consecutive"),
    ("block_starts", set_item(-1, 0), ValueError, "consecutive"),
    ("widths", set_item(0, 10_000), ValueError, "groups must lie within"),
    ("widths", set_item(0, 0), ValueError, "groups must lie within"),
    ("groups", set_item(0, 0), ValueError, "groups must lie within"),
    ("groups", set_item(0, 1), ValueError, "groups must lie within"),
    ("group_offsets", set_item(-1, 10_000), ValueError, "group_offsets must count"),
    ("group_offsets", set_item(0, 1), ValueError, "group_offsets must start at 0"),
    ("ks", set_item(1, 131), ValueError, "between 0 and the category's number of samples"),
    ("ks", set_item(0, -1), ValueError, "between 0 and"),
    ("ks", lambda k: k.astype(np.int32), TypeError, "ks must be"),
    ("ks", lambda k: k[:1], ValueError, "starts needs"),
    ("starts", set_item((0, 5), 0), ValueError, "counts must be the differences of starts"),
    ("starts", set_item((1, -1), 10_000), ValueError, "run from 0 to its number of samples"),
    ("counts", set_item((0, 3), 5), ValueError, "counts must be the differences of starts"),
    ("counts", set_item((0, 3), -1), ValueError, "counts must be the differences"),
    ("samples", set_item(4, 10_000), ValueError, "number each category's samples from 0"),
    ("samples", set_item(4, -3), ValueError, "number each category's samples from 0"),
    ("sample_offsets", set_item(1, 5), ValueError, "each category's starts must run"),
    ("sample_offsets", set_item(-1, 10), ValueError, "sample_offsets must run from 0"),
    ("block_patterns", set_item(0, 3), ValueError, "block_patterns must name exactly"),
    ("block_patterns", set_item(0, 7), ValueError, "categories that are not there"),
    ("block_patterns", set_item(0, -1), ValueError, "categories that are not there"),
    ("index", lambda outputs: outputs[:1], ValueError, "tuples of one array per category"),
    ("index", lambda outputs: list(outputs), ValueError, "tuples of one array per category"),
    ("index", lambda outputs: (outputs[0], np.empty((3, 4), np.int64)), ValueError, r"\(queries, K\)"),
    ("similarity", lambda outputs: (outputs[0], np.empty((3, 5), np.float32)), TypeError, "similarity must be"),
    ("index", lambda outputs: (outputs[0], np.empty((3, 5), np.int64)[:, ::-1]), (ValueError, TypeError),
     "contiguous"),
    ("refine", lambda _: np.zeros((200, 12), np.float16), ValueError, "refine and refine_eps go together"),
    ("refine_eps", lambda _: np.zeros(3), ValueError, "refine and refine_eps go together"),
    ("tile_maxima", lambda _: np.zeros((3, 13), np.float32), ValueError, "tile_maxima and tile_patterns go"),
]


@pytest.mark.parametrize("name, change, error, message", BAD_TABLES,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(BAD_TABLES)])
def test_selection_refuses_tables_of_another_space(c_kernels, name, change, error, message):
    space = two_category_space(np.random.default_rng(0))
    call = selection_call(space, l2_normalise(np.random.default_rng(1).normal(size=(3, 12))))
    c_kernels.select_neighbours(**call)  # the call as it is: valid
    with pytest.raises(error, match=message):
        c_kernels.select_neighbours(**with_change(call, name, change))


def test_selection_refuses_refine_and_tiles_that_do_not_fit(c_kernels):
    space = two_category_space(np.random.default_rng(0))
    call = selection_call(space, l2_normalise(np.random.default_rng(1).normal(size=(3, 12))), tiles=True)
    c_kernels.select_neighbours(**call)
    with pytest.raises(ValueError, match="refine needs"):
        c_kernels.select_neighbours(**dict(call, refine=np.zeros((199, 12), np.float16), refine_eps=np.zeros(3)))
    with pytest.raises(ValueError, match="tile_maxima needs"):
        c_kernels.select_neighbours(**dict(call, tile_maxima=call["tile_maxima"][:, :-1].copy()))
    assert call["tile_patterns"][4] == 0  # columns 64-79: 64-69 of the first category alone, 70-79 of both
    for tile, pattern in ((4, 1), (4, 3), (0, 3)):
        wrong = call["tile_patterns"].copy()
        wrong[tile] = pattern
        with pytest.raises(ValueError, match="the one block that holds the whole tile"):
            c_kernels.select_neighbours(**dict(call, tile_patterns=wrong))


def test_selection_refuses_screens_that_leave_fewer_than_k_samples(c_kernels):
    """Values that are not a screen's (a NaN; tile maxima above every value of their tiles) would leave fewer
    than K samples past the cut: an error naming the query, never neighbours read from unwritten memory."""
    space = two_category_space(np.random.default_rng(0))
    call = selection_call(space, l2_normalise(np.random.default_rng(1).normal(size=(3, 12))), tiles=True)
    values = call["values"].copy()
    values[2] = np.nan
    with pytest.raises(ValueError, match="fewer than K samples of category 0 passed the cut for query 2"):
        c_kernels.select_neighbours(**dict(call, values=values))
    maxima = call["tile_maxima"].copy()
    maxima[1] = 10.0
    with pytest.raises(ValueError, match="fewer than K samples .* for query 1"):
        c_kernels.select_neighbours(**dict(call, tile_maxima=maxima))


def test_selection_takes_keywords_only(c_kernels):
    space = two_category_space(np.random.default_rng(0))
    call = selection_call(space, l2_normalise(np.random.default_rng(1).normal(size=(3, 12))))
    with pytest.raises(TypeError, match="keyword arguments only"):
        c_kernels.select_neighbours(call["values"], **{k: v for k, v in call.items() if k != "values"})
    with pytest.raises(TypeError, match="missing required argument 'samples'"):
        c_kernels.select_neighbours(**{k: v for k, v in call.items() if k != "samples"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'sample'"):
        c_kernels.select_neighbours(**call, sample=call["samples"])


def same_selection(c_call: dict, pure_call: dict) -> None:
    """Both categories' neighbours and float64 similarities, bit for bit."""
    for c in range(2):
        np.testing.assert_array_equal(c_call["index"][c], pure_call["index"][c])
        same_bits(c_call["similarity"][c], pure_call["similarity"][c])


def test_selection_equals_the_pure_path_on_the_same_tables(c_kernels):
    """The same tables through the C (tiles as groups, strided groups) and through numpy: the same bits."""
    rng = np.random.default_rng(5)
    space = two_category_space(rng, n=900, dim=40)
    queries = l2_normalise(rng.normal(size=(50, 40)))
    for tiles in (False, True):
        c_call, pure_call = selection_call(space, queries, 20, tiles), selection_call(space, queries, 20)
        c_kernels.select_neighbours(**c_call)
        with running("pure"):
            kernels.select_neighbours(**pure_call)
        same_selection(c_call, pure_call)


@pytest.mark.parametrize("tiles", [False, True])
def test_selection_keeps_every_neighbour_of_adversarial_screens(c_kernels, tiles):
    """Screen values off their similarities by all but 1 % of the bound, against the answer: each category's true
    neighbours pushed down, every other vector up. The C re-ranks each category's best candidates first, then takes
    only the vectors that could still reach their K-th, re-screened from float16 copies, and still keeps every
    neighbour: the same neighbours and bits as the pure path, which re-ranks every candidate in float64."""
    rng = np.random.default_rng(11)
    space = two_category_space(rng, n=900, dim=40)
    queries = l2_normalise(rng.normal(size=(30, 40)))
    k = 20
    columns = np.asarray(space.source)[space.column_rows]
    exact = queries @ columns.T
    eps = np.full(len(queries), 0.02)
    neighbour = np.zeros(exact.shape, dtype=bool)
    for category in space.categories:  # each category's K best columns by float64 similarity (ties included)
        mine = category.counts > 0
        kth = -np.sort(-np.where(mine, exact, -np.inf), axis=1)[:, k - 1]
        neighbour |= mine & (exact >= kth[:, None])
    values = (exact + np.where(neighbour, -0.99, 0.99) * eps[:, None]).astype(np.float32)
    copies, residual = screens.float16_copies(columns.astype(np.float32))
    norms = screens.query_norms(queries)
    vector_norm = float(np.linalg.norm(columns, axis=1).max()) * (1 + 2.0 ** -23)
    refine_eps = (screens.absolute_error(40, norms, vector_norm) +
                  screens.float16_error(40, norms * (1 + 2.0 ** -24), vector_norm, residual))
    c_call = dict(selection_call(space, queries, k, tiles), values=values, eps=eps, refine=copies,
                  refine_eps=refine_eps)
    if tiles:
        padded = np.pad(values, ((0, 0), (0, -len(columns) % 16)), constant_values=-np.inf)
        c_call["tile_maxima"] = np.ascontiguousarray(padded.reshape(len(queries), -1, 16).max(axis=2))
    pure_call = dict(selection_call(space, queries, k), values=values, eps=eps)
    c_kernels.select_neighbours(**c_call)
    with running("pure"):
        kernels.select_neighbours(**pure_call)
    same_selection(c_call, pure_call)
    for c, category in enumerate(space.categories):  # and they are the brute force's
        samples = np.repeat(np.arange(len(columns)), category.counts)[np.argsort(category.samples)]
        index, _ = brute_force(columns, samples, queries, k)
        np.testing.assert_array_equal(c_call["index"][c], index)


FUZZ = """
import numpy as np, sys
sys.path.insert(0, {tests!r})
from test_kernels import selection_call, two_category_space
from percept.model import _kernels
from percept.model.knn import l2_normalise

rng = np.random.default_rng(0)
space = two_category_space(rng)
call = selection_call(space, l2_normalise(rng.normal(size=(3, 12))), tiles=True)
names = [name for name, table in call.items() if isinstance(table, np.ndarray) and table.dtype == np.int64]
refused = 0
for trial in range({trials}):
    name = names[trial % len(names)]
    table = call[name].copy()
    flat = table.reshape(-1)
    for _ in range(1 + trial % 3):
        flat[rng.integers(len(flat))] = rng.choice([-1, 0, 1, 2, 15, 16, 17, 119, 120, 199, 200, 201, 2**40, -2**40])
    outputs = dict(index=tuple(np.empty_like(a) for a in call["index"]),
                   similarity=tuple(np.empty_like(a) for a in call["similarity"]))
    try:
        _kernels.select_neighbours(**dict(call, **outputs, **{{name: table}}))
    except ValueError:
        refused += 1
print(refused)
"""


def test_selection_survives_random_corruptions_of_its_tables(c_kernels, tmp_path):
    """Thousands of tables with random entries changed (in a separate process, so a crash would show as one):
    each call either refuses its tables with a ValueError or returns."""
    from pathlib import Path

    script = FUZZ.format(tests=str(Path(__file__).parent), trials=3000)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 2000  # most changes break the space (some, like an equal value, do not)
