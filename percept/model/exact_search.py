"""Exact K nearest training samples by inner product: a fast screen decides, float64 confirms.

For each block of queries:

1. ``A``, the screened similarities with every distinct training vector (:mod:`percept.model.screens`: a
   float32 matrix product, or bfloat16 products on AMX tiles). Each value lies within ``eps`` of the float64
   similarity (a rigorous bound per query).
2. A lower bound ``t`` on each query's K-th largest value: the K-th largest maximum over groups of
   columns (K groups hold K distinct vectors at or above ``t``, so K samples have float64 similarity
   at least ``t - eps``).
3. Candidates: the vectors with ``A >= t - 2 eps``. Every other vector is, in float64, less similar
   than those K samples, so the cut never loses a neighbour, however close the values.
4. The exact K-th screened value over samples (a vector counts once per sample) tightens the cut the
   same way; the candidates left get float64 similarities, expand to their samples, and the first K
   by (similarity descending, sample position ascending) are the neighbours: ties, including equal
   vectors stored in different rows, go to the earlier training sample. Where the columns have float16
   copies (a bfloat16 screen over float64 vectors), the C selection takes each category's best candidates
   first and gives them float64 similarities at once; their K-th is a lower bound on the category's K-th
   similarity, so only the vectors whose screened value could still reach it are taken next, re-screened
   from the copies in float32 (a far tighter bound), and re-ranked in float64 only where that value could
   reach it too (the pure path re-ranks every candidate, with the same result).

A search space may hold several categories over one set of distinct vectors (the scorer's five):
one screen serves them all. Columns are ordered by which categories use them, so each category's
groups are whole groups. Blocks of queries run on a few threads, each screen on one thread; steps
2 to 4 run in C (:mod:`percept.model._kernels`), a query at a time, without the GIL, or in numpy
(:mod:`percept.model.pure_search`, the same results) where the C was not built or ``PERCEPT_PURE=1``:
:mod:`percept.model.kernels` decides.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeGuard, TypeVar

import numpy as np

from percept.errors import PerceptError
from percept.model import kernels
from percept.model.screens import (
    U32,
    Float32Screen,
    TileScreen,
    absolute_error,
    aligned_empty,
    column_screen,
    float16_copies,
    float16_error,
    numerator_error,
    stored_screen,
)
from percept.model.shared_settings import ONE_BLAS_THREAD
from percept.model.unit_rows import Rows, UnitRows

T = TypeVar("T")
R = TypeVar("R")

#: Columns per group of the K-th value bound (its selection runs over columns / GROUP_WIDTH group maxima).
GROUP_WIDTH = 32
#: Float32 similarities per block (bounds that buffer to 4 bytes x this). Blocks of fewer than about
#: 512 queries waste time: each product packs all training vectors again.
BLOCK_VALUES = 24 * 1024 * 1024
#: Threads searching blocks of queries at once (each runs its matrix products on one BLAS thread).
THREADS = max(1, min(8, os.cpu_count() or 1))
#: The names of the worker threads begin so.
WORKER_PREFIX = "percept-worker"
#: Fewest queries a search thread takes (smaller shares cost more in overhead than they save).
MIN_SHARE = 64
#: Columns per tile of the AMX screen, whose row maxima it gives.
TILE = 16
#: Columns re-screened from float16 copies must have norms below this (float16 holds up to 65504).
REFINE_RANGE = 2.0 ** 15


def rows64(source: Rows, rows: np.ndarray) -> np.ndarray:
    """Float64 rows ``rows`` (any shape of indices) of an array or :class:`UnitRows`."""
    if isinstance(source, UnitRows):
        return source[rows]
    return np.asarray(source[rows], dtype=np.float64)


def exact32(source: Rows | None) -> TypeGuard[UnitRows]:
    """Whether ``source`` stores its rows in a type float32 holds exactly (float16 or float32 UnitRows)."""
    return isinstance(source, UnitRows) and source.raw.dtype in (np.float16, np.float32)


def stored32(source: UnitRows, rows: np.ndarray) -> np.ndarray:
    """The stored (not normalised) rows ``rows`` of a float16 or float32 ``source`` as float32, which is exact."""
    out = np.empty((len(rows), source.shape[1]), dtype=np.float32)
    kernels.gather_float32(np.ascontiguousarray(source.raw), np.ascontiguousarray(rows, dtype=np.int64), out)
    return out


def rows32(source: Rows, rows: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The float32 rounding of float64 rows ``rows``, converted a chunk at a time (bounded memory)."""
    if isinstance(source, UnitRows):
        return source.float32(rows)
    out = np.empty((len(rows), source.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        out[start:start + chunk] = np.asarray(source[rows[start:start + chunk]], dtype=np.float64)
    return out


@dataclass(frozen=True)
class Found:
    """The K nearest samples of each query, most similar first."""

    index: np.ndarray  # (queries, K) sample positions
    similarity: np.ndarray  # (queries, K) float64 similarities


@dataclass(frozen=True)
class _Category:
    """One category's samples over the columns: column j holds samples[starts[j]:starts[j + 1]]."""

    starts: np.ndarray
    samples: np.ndarray
    counts: np.ndarray

    @property
    def n_samples(self) -> int:
        return len(self.samples)


class SearchSpace:
    """Distinct training vectors laid out for :func:`search`, with the samples of one or more categories.

    ``source`` gives float64 rows on indexing (an array or :class:`UnitRows`); distinct vector i is
    ``source[vector_rows[i]]``. ``sample_vectors[c][j]`` is the distinct vector of sample j of
    category c (samples in training order). When ``source`` is a UnitRows of float16 or float32 rows,
    the screen runs on the stored rows scaled in float32 by their inverse norms, and float64
    similarities are computed from the stored rows where they are; otherwise on ``vectors32`` (the float32
    rounding of the distinct vectors, in order) when given. ``quotients``: float16 numerators and divisors that
    give the float64 rows of ``source`` back exactly, element by element (known quotient rows: they are not looked
    for again, and the screen reads the numerators, each row scaled in float32 by the reciprocal of its divisor);
    ``source`` may then be None, the float64 rows never made but where the pure path re-ranks them.
    """

    def __init__(self, source: Rows | None, vector_rows: np.ndarray, sample_vectors: list[np.ndarray],
                 vectors32: np.ndarray | None = None, quotients: tuple[np.ndarray, np.ndarray] | None = None):
        if source is None and quotients is None:
            raise ValueError("a search space needs its rows: a source, or quotient rows")
        vector_rows = np.asarray(vector_rows, dtype=np.int64)
        n_vectors = self.n_vectors = len(vector_rows)
        pattern = np.zeros(n_vectors, dtype=np.int64)
        for c, vectors in enumerate(sample_vectors):
            pattern[np.asarray(vectors, dtype=np.int64)] |= 1 << c
        order = np.argsort(pattern, kind="stable")
        order = order[pattern[order] > 0]
        self.source = source
        self.dim = int(quotients[0].shape[1] if quotients is not None else source.shape[1])  # type: ignore[union-attr]
        self.column_rows = vector_rows[order]  # source row of each column
        # the float64 norm of each column's stored row (1 for zero rows), when re-ranking reads those rows
        self.norms: np.ndarray | None = None
        if quotients is not None:  # each column's numerators over its divisor, scaled in float32 for the screen
            numerators, divisors = quotients
            self.screen = stored_screen(numerators, self.column_rows,
                                        (1.0 / divisors[self.column_rows]).astype(np.float32))
            vectors32 = None
        elif exact32(source):  # stored rows: scaled to unit length in float32 for the screen, re-ranked from storage
            norms = source.norms_of(self.column_rows)
            self.norms = np.where(norms > 0, norms, 1.0)  # zero rows stay zero
            self.screen = stored_screen(source.raw, self.column_rows, (1.0 / self.norms).astype(np.float32))
            vectors32 = None  # the screen read the stored rows; no float32 copy of the columns is kept
        else:
            if vectors32 is not None:
                in_order = len(order) == len(vectors32) and bool((order == np.arange(len(order))).all())
                vectors32 = np.ascontiguousarray(vectors32 if in_order else vectors32[order], dtype=np.float32)
            else:
                vectors32 = rows32(source, self.column_rows)  # type: ignore[arg-type]
            self.screen = column_screen(vectors32)
        if not np.isfinite(self.screen.vector_norm):  # a NaN or infinite element makes its row's length so
            raise PerceptError("the training vectors contain NaN or infinite values: re-encode the images")
        # each column's divisor where re-ranking reads quotient rows (float16 numerators; see quotient_rows)
        self.row_divisors: np.ndarray | None = None
        self.rerank_matrix, self.rerank_rows = self._rerank_rows(source, vectors32, quotients)
        # what re-screens the candidates on tiles: quotient rows' numerators (over their divisors), else float16
        # copies of float64 or float32 columns (their largest rounding residual bounds the error)
        self.refine16: np.ndarray | None = None
        self.refine_scales: np.ndarray | None = None
        self.refine_residual = 0.0
        if isinstance(self.screen, TileScreen) and self.row_divisors is not None:
            self.refine16 = self.rerank_matrix
            self.refine_scales = (1.0 / self.row_divisors).astype(np.float32)
        elif isinstance(self.screen, TileScreen) and vectors32 is not None and self.rerank_matrix.itemsize > 2 \
                and self.screen.vector_norm < REFINE_RANGE:
            self.refine16, self.refine_residual = float16_copies(vectors32)
        column_of = np.full(n_vectors, -1, dtype=np.int64)
        column_of[order] = np.arange(len(order))
        self._layout_blocks(pattern[order])
        self.categories = [self._category(column_of[np.asarray(v, dtype=np.int64)]) for v in sample_vectors]
        self.tile_patterns = self._tile_patterns() if self.screen.tile_maxima else None
        self._local = threading.local()
        self._groups: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _rerank_rows(self, source: Rows | None, vectors32: np.ndarray | None,
                     quotients: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The rows re-ranking reads and, unless they are the columns in order, the row of each column.

        Known quotient rows as their numerators (a quarter of the bytes of float64 rows; the pure path re-ranks
        the float64 rows they give); stored float16 or float32 rows are read where they are (then divided by
        their norms); float16 and float32 arrays of unit rows through the columns' float32 copy, which holds them
        exactly; float64 arrays as quotient rows where every column is one, else where they are; other sources
        give a float64 copy of their (unit) columns.
        """
        if quotients is not None:
            numerators, divisors = (q[self.column_rows] for q in quotients)
            if kernels.compiled():
                self.row_divisors = divisors
                return numerators, None
            rows = np.empty(numerators.shape)
            kernels.quotient_vectors(numerators, np.arange(len(numerators)), divisors, rows)
            return rows, None
        if self.norms is not None and isinstance(source, UnitRows):
            return np.ascontiguousarray(source.raw), self.column_rows
        if isinstance(source, np.ndarray) and source.dtype in (np.float16, np.float32) and vectors32 is not None:
            return vectors32, None
        if isinstance(source, np.ndarray) and source.dtype == np.float64 and source.flags.c_contiguous:
            found = quotient_rows(source, self.column_rows)
            if found is None:
                return source, self.column_rows
            numerators, self.row_divisors = found
            return numerators, None
        return np.ascontiguousarray(rows64(source, self.column_rows)), None  # type: ignore[arg-type]

    def _tile_patterns(self) -> np.ndarray:
        """For each tile of TILE columns, the categories whose columns hold all of it (0 where it spans blocks)."""
        first = np.arange(0, self.n_columns, TILE)
        block = np.searchsorted(self.block_stops, first, side="right")
        whole = np.minimum(first + TILE, self.n_columns) <= self.block_stops[block]
        return np.where(whole, self.block_patterns[block], 0).astype(np.int64)

    def tile_groups(self, ks: list[int]) -> bool:
        """Whether the screen's tiles serve as the first bound's groups for searches of ``ks`` neighbours:
        when it gives their maxima and each category has at least 8 K whole tiles (as strided groups have)."""
        if self.tile_patterns is None:
            return False
        return all(k == 0 or int(((self.tile_patterns >> c) & 1).sum()) >= 8 * k for c, k in enumerate(ks))

    @property
    def n_columns(self) -> int:
        return len(self.column_rows)

    def _layout_blocks(self, column_pattern: np.ndarray) -> None:
        """Column blocks of equal category pattern (the columns of a block belong to the same categories)."""
        edges = np.flatnonzero(np.diff(column_pattern)) + 1
        self.block_starts = np.concatenate([[0], edges]).astype(np.int64)
        self.block_stops = np.concatenate([edges, [len(column_pattern)]]).astype(np.int64)
        self.block_patterns = column_pattern[self.block_starts] if len(column_pattern) else np.empty(0, np.int64)

    def groups(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Strided column groups for searches of ``k`` neighbours (about 8 K groups per category)."""
        smallest = min((int(c.counts.astype(bool).sum()) for c in self.categories), default=0)
        width = int(np.clip(smallest // (8 * max(k, 1)), 1, GROUP_WIDTH))
        held = self._groups.get(width)
        if held is None:
            held = self._groups[width] = _groups(self, width)
        return held

    @functools.cached_property
    def sample_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The categories' samples as the selection reads them: (starts, counts, samples, sample offsets)."""
        starts = np.ascontiguousarray([c.starts for c in self.categories], dtype=np.int64)
        counts = np.ascontiguousarray([c.counts for c in self.categories], dtype=np.int64)
        samples = np.concatenate([c.samples for c in self.categories]).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum([c.n_samples for c in self.categories])]).astype(np.int64)
        return starts, counts, samples, offsets

    def selection_tables(self, k: int, tiles: bool) -> dict[str, np.ndarray | None]:
        """The space's tables as the selection reads them (keywords of :func:`kernels.select_neighbours`) for
        searches of up to ``k`` neighbours; with ``tiles``, the screen's tiles are the first bound's groups."""
        starts, counts, samples, sample_offsets = self.sample_tables
        widths, groups, group_offsets = self.groups(k)
        return {"matrix": self.rerank_matrix, "matrix_rows": self.rerank_rows, "divisors": self.norms,
                "block_starts": self.block_starts, "block_stops": self.block_stops,
                "block_patterns": self.block_patterns, "widths": widths, "groups": groups,
                "group_offsets": group_offsets, "starts": starts, "counts": counts, "samples": samples,
                "sample_offsets": sample_offsets, "refine": self.refine16, "refine_scales": self.refine_scales,
                "row_divisors": self.row_divisors,
                "tile_patterns": self.tile_patterns if tiles else None}

    def _category(self, sample_columns: np.ndarray) -> _Category:
        order = np.argsort(sample_columns, kind="stable")
        counts = np.bincount(sample_columns, minlength=self.n_columns)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return _Category(starts, order.astype(np.int64), counts.astype(np.int64))

    def buffers(self, rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        """This thread's float32 similarity buffer for ``rows`` queries and, when the screen gives them, its
        buffer of tile maxima (kept: no new pages per block)."""
        held = getattr(self._local, "buffers", None)
        if held is None or held[0].shape[0] < rows:
            tiles = np.empty((rows, -(-self.n_columns // TILE)), np.float32) if self.screen.tile_maxima else None
            held = self._local.buffers = (aligned_empty((rows, self.n_columns), np.float32), tiles)
        return held[0][:rows], None if held[1] is None else held[1][:rows]


def quotient_rows(source: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Float16 numerators and float64 divisors that give the float64 rows ``source[rows]`` back exactly, element
    by element (unit rows normalised from float16 embeddings are such quotients), found on the worker threads;
    None where a row is not one or the compiled kernels are not in use."""
    if not kernels.compiled() or len(rows) == 0:
        return None
    numerators = np.empty((len(rows), source.shape[1]), dtype=np.float16)
    divisors = np.empty(len(rows))
    parts = np.array_split(np.arange(len(rows)), min(THREADS, -(-len(rows) // 1024)))

    def find(part: np.ndarray) -> bool:
        return kernels.quotient_rows(source, rows[part], numerators[part[0]:part[-1] + 1],
                                     divisors[part[0]:part[-1] + 1]) < 0

    return (numerators, divisors) if all(on_workers(find, parts)) else None


def _groups(space: SearchSpace, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each block's columns in strided groups of ``width`` (left-over columns join the first groups):
    (width, groups, group offsets) per block."""
    sizes = space.block_stops - space.block_starts
    widths = np.maximum(1, np.minimum(width, np.sqrt(sizes).astype(np.int64)))  # left-overs < groups
    groups = sizes // widths
    return widths, groups, np.concatenate([[0], np.cumsum(groups)]).astype(np.int64)


def search(space: SearchSpace, queries: Rows, k: int, rows: np.ndarray | None = None, block: int = 1024,
           threads: int = THREADS) -> list[Found]:
    """The ``min(k, samples)`` nearest samples of each query, for each category of ``space``.

    ``queries``: float64 rows (an array or :class:`UnitRows`) in the space's dimension; with ``rows``,
    the queries are those rows of it. ``block`` caps the queries searched at once; blocks run on
    ``threads`` threads.
    """
    in_order = rows is None
    rows = np.arange(len(queries)) if rows is None else np.asarray(rows, dtype=np.int64)
    ks = [min(int(k), category.n_samples) for category in space.categories]
    m = len(rows)
    found = [Found(np.empty((m, kc), np.int64), np.empty((m, kc), np.float64)) for kc in ks]
    if m == 0 or space.n_columns == 0:
        return found
    workers = max(1, min(threads, THREADS, -(-m // MIN_SHARE)))
    blocks = -(-m // max(1, min(block, BLOCK_VALUES // space.n_columns)))
    blocks = -(-blocks // workers) * workers
    block = -(-m // blocks)
    starts = list(range(0, m, block))

    tile_groups = space.tile_groups(ks)

    def run(start: int) -> None:
        q64 = _query_block(queries, rows[start:start + block], slice(start, start + block) if in_order else None)
        values, maxima, eps, norms = _screen(space, q64)
        _select(space, q64, values, maxima if tile_groups else None, eps, _refine_error(space, norms), ks, found,
                slice(start, start + len(q64)))

    if workers > 1 and len(starts) > 1:
        with _one_blas_thread_each(space.screen):
            on_workers(run, starts)
    else:
        for start in starts:
            run(start)
    return found


def _query_block(queries: Rows, rows: np.ndarray, span: slice | None) -> np.ndarray:
    """Float64 rows ``rows`` of the queries, C-contiguous: a view where they are the consecutive ``span`` of a
    float64 array (no copy), else gathered."""
    if span is not None and isinstance(queries, np.ndarray) and queries.dtype == np.float64:
        return np.ascontiguousarray(queries[span])
    return np.ascontiguousarray(rows64(queries, rows))


def _one_blas_thread_each(screen: Float32Screen | TileScreen) -> contextlib.AbstractContextManager[None]:
    """While search threads run a float32 screen's products: one BLAS thread each (the tiles use no BLAS),
    restored when the last search running on several threads ends."""
    if not screen.uses_blas:
        return contextlib.nullcontext()
    return ONE_BLAS_THREAD.held()


def on_workers(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``function`` of each item, on the worker threads; in turn where the caller is one of them (a worker
    waiting on its own pool could wait forever)."""
    if threading.current_thread().name.startswith(WORKER_PREFIX):
        return [function(item) for item in items]
    return list(worker_pool().map(function, items))


@functools.cache
def worker_pool() -> ThreadPoolExecutor:
    """The model's ``THREADS`` worker threads: searches run their blocks on them, and the work around a search
    (neighbour statistics, distinct vectors) its parts."""
    return ThreadPoolExecutor(THREADS, thread_name_prefix=WORKER_PREFIX)


def _screen(space: SearchSpace, q64: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """The screened similarities of a block of queries with every column, the tile maxima (where the screen
    gives them), each query's error bound and an upper bound on its norm."""
    values, maxima = space.buffers(len(q64))
    eps, norms = space.screen.similarities(q64, values, maxima)
    return values, maxima, eps, norms


def _refine_error(space: SearchSpace, norms: np.ndarray) -> np.ndarray | None:
    """Each query's bound on the candidates' re-screened values (None where they are not re-screened), from upper
    bounds on the queries' norms."""
    if space.refine16 is None:
        return None
    vector_norm = space.screen.vector_norm
    rescreen = numerator_error(space.dim, norms * (1 + U32), vector_norm) if space.refine_scales is not None else \
        float16_error(space.dim, norms * (1 + U32), vector_norm, space.refine_residual)
    return absolute_error(space.dim, norms, vector_norm) + rescreen


def _select(space: SearchSpace, q64: np.ndarray, values: np.ndarray, maxima: np.ndarray | None, eps: np.ndarray,
            refine_eps: np.ndarray | None, ks: list[int], found: list[Found], rows: slice) -> None:
    """Each category's K nearest samples (K = ``ks[c]``, 0 skips a category) of queries screened as ``values``,
    written to ``found[c]`` at ``rows``: steps 2 to 4 of the module docstring. With the
    screen's tile ``maxima``, tiles are the first bound's groups and tiles below a cut are not read."""
    kernels.select_neighbours(values=values, queries=q64, eps=eps, ks=np.asarray(ks, dtype=np.int64),
                              index=tuple(f.index[rows] for f in found),
                              similarity=tuple(f.similarity[rows] for f in found), refine_eps=refine_eps,
                              tile_maxima=maxima, **space.selection_tables(max(ks), tiles=maxima is not None))
