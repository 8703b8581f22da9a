"""The pure path (numpy, no C): the kernels' summation order, the same bits as the compiled search on
adversarial data, and its use where the extensions were not built or ``PERCEPT_PURE=1``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_exact_search import DATA, brute_force, model_of
from test_kernels import implementations, running, same_bits

from percept.categories import CATEGORIES
from percept.model import pure_search
from percept.model.knn import KNNRegressor
from percept.model.neighbour_lists import neighbour_lists
from percept.model.scoring import MultiScorer
from percept.model.unit_rows import UnitRows

ROOT = Path(__file__).resolve().parent.parent


def lane_sum(terms: list[float], lanes: int = 32) -> float:
    """The kernels' order written out one addition at a time, in Python floats (each addition rounds once)."""
    whole = len(terms) - len(terms) % lanes
    partial = [0.0] * lanes
    for k in range(whole):
        partial[k % lanes] += terms[k]
    width = lanes // 2
    while width:
        for lane in range(width):
            partial[lane] += partial[lane + width]
        width //= 2
    total = partial[0]
    for k in range(whole, len(terms)):
        total += terms[k]
    return total


@pytest.mark.parametrize("dim", [1, 5, 31, 32, 33, 64, 100, 1030])
def test_fixed_order_sums_add_in_the_kernels_order(dim):
    """Terms over twenty orders of magnitude (where the order of additions shows in the last bits)."""
    rng = np.random.default_rng(dim)
    terms = rng.normal(size=(6, dim)) * 10.0 ** rng.integers(-10, 10, size=(6, dim))
    terms[0] = -0.0  # negative zeros: the partial sums start at +0
    sums = pure_search.fixed_order_sums(terms)
    for row, total in zip(terms, sums):
        assert total.tobytes() == np.float64(lane_sum(row.tolist())).tobytes()
    assert not np.signbit(sums[0])


def same_neighbours(results: dict) -> None:
    """Every implementation found what the pure path found: the same samples, the same similarity bits."""
    for found in results.values():
        np.testing.assert_array_equal(found.index, results["pure"].index)
        same_bits(found.similarity, results["pure"].similarity)


@pytest.mark.parametrize("make", DATA)
def test_knn_regressor_has_the_same_bits_on_every_path(make, screen):
    rng = np.random.default_rng(2)
    vectors, queries = make(rng)
    rows = rng.permutation(len(vectors))
    results = {}
    for implementation in implementations():
        with running(implementation):
            results[implementation] = KNNRegressor(40, block_size=16).fit(vectors, np.ones(len(rows)),
                                                                          rows).kneighbors(queries)
    same_neighbours(results)
    index, sims = brute_force(vectors, rows, queries, 40)
    np.testing.assert_array_equal(results["pure"].index, index)
    np.testing.assert_allclose(results["pure"].similarity, sims, rtol=0, atol=1e-14)


@pytest.mark.parametrize("make", DATA)
def test_scorer_and_cross_validation_lists_have_the_same_bits_on_every_path(make, screen):
    """Five categories over shared vectors (one screen, float16 copies on tiles), and the lists of
    cross-validation searched from the vectors themselves."""
    rng = np.random.default_rng(3)
    vectors, queries = make(rng)
    model = model_of(vectors, rng, k=30)
    sample_rows = rng.integers(0, len(vectors), 500)
    scored, lists = {}, {}
    for implementation in implementations():
        with running(implementation):
            scored[implementation] = MultiScorer(model, block_size=16).neighbours(queries)
            lists[implementation] = neighbour_lists(vectors, sample_rows, 30)
    for category in CATEGORIES:
        same_neighbours({name: found[category] for name, found in scored.items()})
        own = model.vectors[category]
        index, _ = brute_force(own, np.arange(len(own)), queries, 30)
        np.testing.assert_array_equal(scored["pure"][category].index, index)
    for found in lists.values():
        np.testing.assert_array_equal(found.samples, lists["pure"].samples)
        same_bits(found.similarity, lists["pure"].similarity)


def test_float16_rows_have_the_same_bits_on_every_path(screen):
    """The drop-in's path: float16 rows re-ranked where they are stored, divided by their norms."""
    rng = np.random.default_rng(4)
    raw = rng.normal(size=(900, 70)).astype(np.float16)
    raw[rng.integers(0, 800, 60)] = raw[rng.integers(0, 800, 60)]
    train = rng.permutation(800)
    results = {}
    for implementation in implementations():
        with running(implementation):
            unit = UnitRows(raw)
            model = KNNRegressor(25, block_size=64).fit(unit, np.ones(800), train)
            results[implementation] = model.kneighbors(unit, rows=np.arange(800, 900))
    same_neighbours(results)


def test_the_pure_selection_refuses_screens_that_leave_fewer_than_k_samples():
    """A NaN screen value (never a screen's) leaves a query without its K samples: an error naming it."""
    values = np.array([[0.5, 0.2, 0.1], [np.nan, np.nan, np.nan]], dtype=np.float32)
    index, similarity = (np.empty((2, 2), np.int64),), (np.empty((2, 2)),)
    with pytest.raises(ValueError, match="for query 1"):
        pure_search.select_neighbours(values=values, queries=np.eye(2, 3), eps=np.full(2, 1e-4), matrix=np.eye(3),
                                      ks=np.array([2]), starts=np.array([[0, 1, 2, 3]]),
                                      counts=np.ones((1, 3), np.int64), samples=np.arange(3),
                                      sample_offsets=np.array([0, 3]), index=index, similarity=similarity)


SEARCH = """
import sys
import numpy as np
{setup}
from percept.model import kernels
from percept.model.knn import KNNRegressor
rng = np.random.default_rng(0)
vectors = rng.normal(size=(500, 20))
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
found = KNNRegressor(7).fit(vectors, np.ones(500)).kneighbors(vectors[:50])
order = np.argsort(-(vectors[:50] @ vectors.T), axis=1, kind="stable")[:, :7]
assert (found.index == order).all(), "not the brute force's neighbours"
imported = "percept.model._kernels" in sys.modules
print(imported, kernels.compiled(), kernels.tiles_available(), kernels.implementation(), kernels.built())
"""


def search_in_a_new_process(setup: str = "", **environment) -> list[str]:
    """Runs a search in a fresh interpreter; returns what it reports: whether the search imported the compiled
    kernels, whether they run, whether the tiles do, the implementation, and whether the kernels were built."""
    env = {**os.environ, **environment}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SEARCH.format(setup=setup))], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_percept_pure_keeps_the_compiled_kernels_out():
    imported, compiled, tiles, implementation, _ = search_in_a_new_process(PERCEPT_PURE="1")
    assert (imported, compiled, tiles, implementation) == ("False", "False", "False", "pure")


def test_without_the_extensions_the_pure_path_searches():
    """Where the C extensions were not built (their import fails): the pure path, no tiles, the same neighbours."""
    block = "sys.modules['percept.model._kernels'] = None  # an import that fails, as where they were not built"
    _, compiled, tiles, implementation, built = search_in_a_new_process(block, PERCEPT_PURE="")
    assert (compiled, tiles, implementation, built) == ("False", "False", "pure", "False")


def test_compiled_kernels_search_where_they_were_built():
    pytest.importorskip("percept.model._kernels")
    imported, compiled, _, implementation, built = search_in_a_new_process(PERCEPT_PURE="0")
    assert (imported, compiled, built) == ("True", "True", "True")
    assert implementation in ("avx512", "avx2", "portable")
