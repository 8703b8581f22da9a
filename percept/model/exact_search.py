"""Exact K nearest training samples by inner product: a float32 product decides, float64 confirms.

For each block of queries:

1. ``A = Q32 @ X32.T``, the float32 similarities with every distinct training vector. Each value lies
   within ``eps`` of the float64 similarity (:func:`float32_error`, a rigorous bound).
2. A lower bound ``t`` on each query's K-th largest value: the K-th largest maximum over groups of
   columns (K groups hold K distinct vectors at or above ``t``, so K samples have float64 similarity
   at least ``t - eps``).
3. Candidates: the vectors with ``A >= t - 2 eps``. Every other vector is, in float64, less similar
   than those K samples, so the cut never loses a neighbour, however close the values.
4. The exact float32 K-th value over samples (a vector counts once per sample) tightens the cut the
   same way; the candidates left get float64 similarities, expand to their samples, and the first K
   by (similarity descending, sample position ascending) are the neighbours: ties, including equal
   vectors stored in different rows, go to the earlier training sample.

A search space may hold several categories over one set of distinct vectors (the scorer's five):
one product serves them all. Columns are ordered by which categories use them, so each category's
groups are whole groups. Blocks of queries run on a few threads, one BLAS thread each.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from percept.errors import PerceptError
from percept.model._kernels import gather_float32, pair_dots
from percept.model.unit_rows import UnitRows, row_norms

U32 = 2.0 ** -24
U64 = 2.0 ** -53
#: Columns per group of the K-th value bound (the bound's partial sort runs over columns / GROUP_WIDTH).
GROUP_WIDTH = 16
#: Float32 similarities per block and thread (bounds that buffer to 4 bytes x this). Blocks of fewer
#: than about 512 queries waste time: each product packs all training vectors again.
BLOCK_VALUES = 24 * 1024 * 1024
#: Threads searching blocks of queries at once (each runs its matrix products on one BLAS thread).
THREADS = max(1, min(8, os.cpu_count() or 1))


def float32_error(dim: int) -> float:
    """Bound, as a multiple of ``|q| |x|``, on |float32 product value - float64 similarity|.

    For float64 vectors q, x of ``dim`` elements and their float32 roundings q', x' (each element
    within a factor 1 ± u of its value, u = 2^-24): the float32 dot product of q', x' in any
    summation order (BLAS blocking and FMA included) is within g(d) Σ|q'_k x'_k| <= g(d) (1+u)^2 |q||x|
    of q'·x', with g(d) = d u / (1 - d u) (Higham, Accuracy and Stability of Numerical Algorithms,
    §3.1); q'·x' is within (2u + u^2)|q||x| of q·x. When x' holds a stored row exactly and the value is
    scaled by the row's float32 inverse norm afterwards, the scaling adds at most 2u + u^2. The float64
    similarity is within the float64 g(d + 4) |q||x| of q·x. :func:`absolute_error` adds underflow.
    """
    gamma32 = dim * U32 / (1 - dim * U32)
    gamma64 = (dim + 4) * U64 / (1 - (dim + 4) * U64)
    return gamma32 * (1 + U32) ** 3 + 4 * U32 + 4 * U32 ** 2 + gamma64


def absolute_error(dim: int, query_norms: np.ndarray, vector_norm: float, scale: float = 1.0) -> np.ndarray:
    """The full bound per query: :func:`float32_error` plus what underflow (values below 2^-126) can add.

    ``scale``: the largest factor the float32 values are multiplied by after the product.
    """
    underflow = (3 * dim + 8) * 2.0 ** -149 * (2 + query_norms + vector_norm) * max(scale, 1.0)
    return float32_error(dim) * query_norms * vector_norm * (1 + 4 * U64) + underflow


def rows64(source, rows: np.ndarray) -> np.ndarray:
    """Float64 rows ``rows`` (any shape of indices) of an array or :class:`UnitRows`."""
    if isinstance(source, UnitRows):
        return source[rows]
    return np.asarray(source[rows], dtype=np.float64)


def exact32(source) -> bool:
    """Whether ``source`` stores its rows in a type float32 holds exactly (float16 or float32 UnitRows)."""
    return isinstance(source, UnitRows) and source.raw.dtype in (np.float16, np.float32)


def stored32(source: UnitRows, rows: np.ndarray) -> np.ndarray:
    """The stored (not normalised) rows ``rows`` of a float16 or float32 ``source`` as float32, which is exact."""
    out = np.empty((len(rows), source.shape[1]), dtype=np.float32)
    gather_float32(np.ascontiguousarray(source.raw), np.ascontiguousarray(rows, dtype=np.int64), out)
    return out


def rows32(source, rows: np.ndarray, chunk: int = 256) -> np.ndarray:
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
    blocks: np.ndarray  # (column blocks,) True where the block's vectors belong to this category
    single: bool  # every vector holds at most one sample

    @property
    def n_samples(self) -> int:
        return len(self.samples)


class SearchSpace:
    """Distinct training vectors laid out for :func:`search`, with the samples of one or more categories.

    ``source`` gives float64 rows on indexing (an array or :class:`UnitRows`); distinct vector i is
    ``source[vector_rows[i]]``. ``sample_vectors[c][j]`` is the distinct vector of sample j of
    category c (samples in training order). When ``source`` is a UnitRows of float16 or float32 rows,
    the stored rows serve both passes: the float32 product runs on them exactly as stored (its
    columns then scaled by the inverse norms) and float64 similarities are computed from them.
    """

    def __init__(self, source, vector_rows: np.ndarray, sample_vectors: list[np.ndarray],
                 vectors32: np.ndarray | None = None):
        vector_rows = np.asarray(vector_rows, dtype=np.int64)
        n_vectors = len(vector_rows)
        pattern = np.zeros(n_vectors, dtype=np.int64)
        for c, vectors in enumerate(sample_vectors):
            pattern[np.asarray(vectors, dtype=np.int64)] |= 1 << c
        order = np.argsort(pattern, kind="stable")
        order = order[pattern[order] > 0]
        self.source = source
        self.dim = int(source.shape[1])
        self.column_rows = vector_rows[order]  # source row of each column
        if vectors32 is not None:
            in_order = len(order) == len(vectors32) and bool((order == np.arange(len(order))).all())
            self.vectors32 = np.ascontiguousarray(vectors32 if in_order else vectors32[order], dtype=np.float32)
        else:
            self.vectors32 = stored32(source, self.column_rows) if exact32(source) else rows32(source, self.column_rows)
        self.norms = None  # float64 norm of each column's stored row (1 for zero rows), when vectors32 holds them
        lengths = row_norms(self.vectors32)
        if not np.isfinite(lengths).all():  # a NaN or infinite element makes its row's length so
            raise PerceptError("the training vectors contain NaN or infinite values: re-encode the images")
        self.scale = 1.0
        if exact32(source):
            norms = source.norms_of(self.column_rows)
            self.norms = np.where(norms > 0, norms, 1.0)  # zero rows stay zero
            self.inverse32 = (1.0 / self.norms).astype(np.float32)
            lengths = lengths / self.norms
            self.scale = float(self.inverse32.max(initial=1.0)) * (1 + U32)
        self.vector_norm = float(lengths.max(initial=0.0)) * (1 + 2 * U32)
        self.rerank_matrix, self.rerank_rows = self._rerank_rows(source)
        column_of = np.full(n_vectors, -1, dtype=np.int64)
        column_of[order] = np.arange(len(order))
        self._layout_blocks(pattern[order])
        self.categories = [self._category(column_of[np.asarray(v, dtype=np.int64)], c)
                           for c, v in enumerate(sample_vectors)]
        self._local = threading.local()
        self._groupings: dict[int, _Grouping] = {}

    def _rerank_rows(self, source) -> tuple[np.ndarray, np.ndarray | None]:
        """The rows re-ranking reads and, unless they are the columns in order, the row of each column.

        Float32 holds float16 and float32 rows exactly, so the columns' float32 copy serves; float64
        arrays are read where they are; other sources give a float64 copy of their (unit) columns.
        """
        if self.norms is not None or (isinstance(source, np.ndarray) and source.dtype in (np.float16, np.float32)):
            return self.vectors32, None
        if isinstance(source, np.ndarray) and source.dtype == np.float64 and source.flags.c_contiguous:
            return source, self.column_rows
        return np.ascontiguousarray(rows64(source, self.column_rows)), None

    @property
    def n_columns(self) -> int:
        return len(self.column_rows)

    def _layout_blocks(self, column_pattern: np.ndarray) -> None:
        """Column blocks of equal category pattern (the columns of a block belong to the same categories)."""
        edges = np.flatnonzero(np.diff(column_pattern)) + 1
        self.block_starts = np.concatenate([[0], edges]).astype(np.int64)
        self.block_stops = np.concatenate([edges, [len(column_pattern)]]).astype(np.int64)
        self.block_patterns = column_pattern[self.block_starts] if len(column_pattern) else np.empty(0, np.int64)

    def grouping(self, k: int) -> "_Grouping":
        """Strided column groups for searches of ``k`` neighbours: about 8 K groups per category."""
        smallest = min((int(c.counts.astype(bool).sum()) for c in self.categories), default=0)
        width = int(np.clip(smallest // (8 * max(k, 1)), 1, GROUP_WIDTH))
        held = self._groupings.get(width)
        if held is None:
            held = self._groupings[width] = _Grouping(self, width)
        return held

    def _category(self, sample_columns: np.ndarray, c: int) -> _Category:
        order = np.argsort(sample_columns, kind="stable")
        counts = np.bincount(sample_columns, minlength=self.n_columns)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return _Category(starts, order.astype(np.int64), counts, (self.block_patterns >> c) & 1 == 1,
                         bool(counts.max(initial=0) <= 1))

    def buffer(self, rows: int) -> np.ndarray:
        """This thread's float32 similarity buffer for ``rows`` queries (kept: no new pages per block)."""
        held = getattr(self._local, "buffer", None)
        if held is None or held.shape[0] < rows:
            held = self._local.buffer = np.empty((rows, self.n_columns), dtype=np.float32)
        return held[:rows]


class _Grouping:
    """Each block's columns in strided groups of ``width`` (left-over columns join the first groups)."""

    def __init__(self, space: SearchSpace, width: int):
        sizes = space.block_stops - space.block_starts
        self.widths = np.maximum(1, np.minimum(width, np.sqrt(sizes).astype(np.int64)))  # left-overs < groups
        self.groups = sizes // self.widths
        self.offsets = np.concatenate([[0], np.cumsum(self.groups)]).astype(np.int64)
        self.of_category = []  # per category: its group columns (None: all)
        for category in space.categories:
            if category.blocks.all():
                self.of_category.append(None)
            else:
                self.of_category.append(np.concatenate(
                    [np.arange(self.offsets[b], self.offsets[b + 1]) for b in np.flatnonzero(category.blocks)]
                    or [np.empty(0, np.int64)]))

    def maxima(self, space: SearchSpace, values: np.ndarray) -> np.ndarray:
        """(queries, groups) maximum of each group."""
        b = len(values)
        out = np.empty((b, self.offsets[-1]), dtype=np.float32)
        for start, stop, groups, width, offset in zip(space.block_starts, space.block_stops, self.groups,
                                                      self.widths, self.offsets):
            whole = start + groups * width
            part = out[:, offset:offset + groups]
            np.max(values[:, start:whole].reshape(b, width, groups), axis=1, out=part)
            if whole < stop:
                np.maximum(part[:, :stop - whole], values[:, whole:stop], out=part[:, :stop - whole])
        return out

    def first_cut(self, maxima: np.ndarray, c: int, k: int) -> np.ndarray:
        """A lower bound on each query's K-th largest value in category ``c``: its K-th largest group maximum."""
        own = maxima if self.of_category[c] is None else maxima[:, self.of_category[c]]
        if own.shape[1] < k:
            return np.full(len(maxima), -np.inf)
        return np.partition(own, own.shape[1] - k, axis=1)[:, own.shape[1] - k].astype(np.float64)


def search(space: SearchSpace, queries, k: int, rows: np.ndarray | None = None, block: int = 1024,
           threads: int = THREADS) -> list[Found]:
    """The ``min(k, samples)`` nearest samples of each query, for each category of ``space``.

    ``queries``: float64 rows (an array or :class:`UnitRows`) in the space's dimension; with ``rows``,
    the queries are those rows of it. ``block`` caps the queries searched at once.
    """
    rows = np.arange(len(queries)) if rows is None else np.asarray(rows, dtype=np.int64)
    ks = [min(int(k), category.n_samples) for category in space.categories]
    m = len(rows)
    found = [Found(np.empty((m, kc), np.int64), np.empty((m, kc), np.float64)) for kc in ks]
    if m == 0 or space.n_columns == 0:
        return found
    workers = max(1, min(threads, THREADS, -(-m // 64)))
    blocks = -(-m // max(1, min(block, BLOCK_VALUES // space.n_columns)))
    blocks = -(-blocks // workers) * workers
    block = -(-m // blocks)
    starts = list(range(0, m, block))

    def run(start: int) -> None:
        part = slice(start, start + block)
        q64 = rows64(queries, rows[part])
        for f, result in zip(found, _search_block(space, q64, ks)):
            f.index[part], f.similarity[part] = result

    if workers > 1 and len(starts) > 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            list(_pool().map(run, starts))
    else:
        for start in starts:
            run(start)
    return found


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(THREADS, thread_name_prefix="percept-search")


def _search_block(space: SearchSpace, q64: np.ndarray, ks: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each category's K nearest samples (K = ``ks[c]``, 0 skips a category) of one block of queries."""
    if not np.isfinite(q64).all():
        raise PerceptError("the query vectors contain NaN or infinite values: re-encode the images")
    b = len(q64)
    values = space.buffer(b)
    np.matmul(q64.astype(np.float32), space.vectors32.T, out=values)
    if space.norms is not None:
        values *= space.inverse32
    eps = absolute_error(space.dim, np.sqrt(np.einsum("ij,ij->i", q64, q64)), space.vector_norm, space.scale)
    grouping = space.grouping(max(ks))
    maxima = grouping.maxima(space, values)
    cuts = [grouping.first_cut(maxima, c, k) - 2 * eps if k else None for c, k in enumerate(ks)]
    rows, cols = _candidates(space, values, cuts)
    vals = values[rows, cols]
    kept = [_sample_cut(space.categories[c], rows, cols, vals, cuts[c], k, eps, b) if k else None
            for c, k in enumerate(ks)]
    if sum(k is not None for k in kept) == 1:
        pair_rows, pair_cols = next(k for k in kept if k is not None)
        keys = None
    else:
        keys = np.unique(np.concatenate([r * space.n_columns + c for r, c in filter(None, kept)]))
        pair_rows, pair_cols = np.divmod(keys, space.n_columns)
    sims = _similarities(space, q64, pair_rows, pair_cols)
    out = []
    for c, k in enumerate(ks):
        if not k:
            out.append((np.empty((b, 0), np.int64), np.empty((b, 0))))
            continue
        r, col = kept[c]
        s = sims if keys is None else sims[np.searchsorted(keys, r * space.n_columns + col)]
        out.append(_first_samples(space.categories[c], r, col, s, k, b))
    return out


def _float32_floor(values: np.ndarray) -> np.ndarray:
    """Float32 values no larger than ``values`` (so a float32 comparison never cuts too much)."""
    rounded = values.astype(np.float32)
    return np.where(rounded > values, np.nextafter(rounded, np.float32(-np.inf)), rounded)


def _candidates(space: SearchSpace, values: np.ndarray, cuts: list) -> tuple[np.ndarray, np.ndarray]:
    """(query, column) of every value at or above the lowest cut of its block's categories, by query."""
    rows, cols = [], []
    for start, stop, pattern in zip(space.block_starts, space.block_stops, space.block_patterns):
        users = [cut for c, cut in enumerate(cuts) if cut is not None and (pattern >> c) & 1]
        if users:
            hits = np.flatnonzero(values[:, start:stop] >= _float32_floor(np.minimum.reduce(users))[:, None])
            r, col = np.divmod(hits, stop - start)
            rows.append(r)
            cols.append(col + start)
    if len(rows) == 1:
        return rows[0], cols[0]
    rows, cols = np.concatenate(rows or [np.empty(0, np.int64)]), np.concatenate(cols or [np.empty(0, np.int64)])
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


def _padded(rows: np.ndarray, b: int, *arrays: tuple[np.ndarray, object]) -> list[np.ndarray]:
    """Flat per-query values (``rows`` ascending) laid out as (b, widest) arrays, each padded with its fill."""
    starts = np.searchsorted(rows, np.arange(b + 1))
    width = int(np.diff(starts).max(initial=0))
    position = np.arange(len(rows)) - starts[rows]
    out = []
    for values, fill in arrays:
        grid = np.full((b, width), fill, dtype=values.dtype)
        grid[rows, position] = values
        out.append(grid)
    return out


def _sample_cut(category: _Category, rows, cols, vals, cut, k, eps, b) -> tuple[np.ndarray, np.ndarray]:
    """The candidates of ``category``, cut again at its exact float32 K-th value over samples."""
    mine = vals >= cut[rows]
    if not category.blocks.all():
        mine &= category.counts[cols] > 0
    rows, cols, vals = rows[mine], cols[mine], vals[mine]
    grid, counts = _padded(rows, b, (vals, -np.inf), (category.counts[cols], 0))
    if category.single:
        kth = -np.partition(-grid, k - 1, axis=1)[:, k - 1]
    else:
        order = np.argsort(-grid, axis=1, kind="stable")
        reached = np.cumsum(np.take_along_axis(counts, order, axis=1), axis=1) >= k
        kth = np.take_along_axis(grid, order, axis=1)[np.arange(b), reached.argmax(axis=1)]
    keep = vals >= (kth.astype(np.float64) - 2 * eps)[rows]
    return rows[keep], cols[keep]


def _similarities(space: SearchSpace, q64: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Float64 similarity of each (query, column) pair, summed from the stored rows without float64 copies."""
    sims = np.empty(len(rows), dtype=np.float64)
    if len(rows):
        index = cols if space.rerank_rows is None else space.rerank_rows[cols]
        pair_dots(np.ascontiguousarray(q64), space.rerank_matrix, rows, np.ascontiguousarray(index), sims)
        if space.norms is not None:
            sims /= space.norms[cols]
    return sims


def _first_samples(category: _Category, rows, cols, sims, k, b) -> tuple[np.ndarray, np.ndarray]:
    """Expand (query, column) pairs to samples; per query the first K by (-similarity, sample position)."""
    if category.single:
        samples = category.samples[category.starts[cols]]
    else:
        counts = category.counts[cols]
        pair = np.repeat(np.arange(len(cols)), counts)
        within = np.arange(len(pair)) - np.repeat(np.cumsum(counts) - counts, counts)
        samples = category.samples[category.starts[cols][pair] + within]
        rows, sims = rows[pair], sims[pair]
    grid_sims, grid_samples = _padded(rows, b, (sims, -np.inf), (samples, np.iinfo(np.int64).max))
    order = np.lexsort((grid_samples, -grid_sims), axis=1)[:, :k]
    return np.take_along_axis(grid_samples, order, axis=1), np.take_along_axis(grid_sims, order, axis=1)
