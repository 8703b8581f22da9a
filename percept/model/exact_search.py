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
from percept.model.unit_rows import UnitRows

U32 = 2.0 ** -24
U64 = 2.0 ** -53
#: Columns per group of the K-th value bound (the bound's partial sort runs over columns / GROUP_WIDTH).
GROUP_WIDTH = 16
#: Float32 similarities per block and thread (bounds that buffer to 4 bytes x this).
BLOCK_VALUES = 16 * 1024 * 1024
#: Float64 values gathered at once for re-ranking (bounds that scratch to 8 bytes x this).
GATHER_VALUES = 256 * 1024
#: Threads searching blocks of queries at once (each runs its matrix products on one BLAS thread).
THREADS = max(1, min(8, os.cpu_count() or 1))


def float32_error(dim: int) -> float:
    """Bound, as a multiple of ``|q| |x|``, on |float32 product value - float64 similarity|.

    For float64 vectors q, x of ``dim`` elements and their float32 roundings q', x' (each element
    within a factor 1 ± u of its value, u = 2^-24): the float32 dot product of q', x' in any
    summation order (BLAS blocking and FMA included) is within g(d) Σ|q'_k x'_k| <= g(d) (1+u)^2 |q||x|
    of q'·x', with g(d) = d u / (1 - d u) (Higham, Accuracy and Stability of Numerical Algorithms,
    §3.1); q'·x' is within (2u + u^2)|q||x| of q·x; the float64 similarity is within the float64
    g(d + 2) |q||x| of q·x. :func:`absolute_error` adds the term for values below float32's range.
    """
    gamma32 = dim * U32 / (1 - dim * U32)
    gamma64 = (dim + 2) * U64 / (1 - (dim + 2) * U64)
    return gamma32 * (1 + U32) ** 2 + 2 * U32 + U32 ** 2 + gamma64


def absolute_error(dim: int, query_norms: np.ndarray, vector_norm: float) -> np.ndarray:
    """The full bound per query: :func:`float32_error` plus what underflow (values below 2^-126) can add."""
    underflow = (3 * dim + 8) * 2.0 ** -149 * (2 + query_norms + vector_norm)
    return float32_error(dim) * query_norms * vector_norm * (1 + 4 * U64) + underflow


def rows64(source, rows: np.ndarray) -> np.ndarray:
    """Float64 rows ``rows`` (any shape of indices) of an array or :class:`UnitRows`."""
    if isinstance(source, UnitRows):
        return source[rows]
    return np.asarray(source[rows], dtype=np.float64)


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

    @property
    def n_samples(self) -> int:
        return len(self.samples)


class SearchSpace:
    """Distinct training vectors laid out for :func:`search`, with the samples of one or more categories.

    ``source`` gives float64 rows on indexing (an array or :class:`UnitRows`); distinct vector i is
    ``source[vector_rows[i]]``. ``sample_vectors[c][j]`` is the distinct vector of sample j of
    category c (samples in training order).
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
        self.column_vectors = order  # distinct vector of each column
        if vectors32 is None:
            self.vectors32 = rows32(source, self.column_rows)
        else:
            self.vectors32 = np.ascontiguousarray(vectors32[order], dtype=np.float32)
        if not np.isfinite(self.vectors32).all():
            raise PerceptError("the training vectors contain NaN or infinite values: re-encode the images")
        self.vector_norm = float(np.sqrt(np.einsum("ij,ij->i", self.vectors32, self.vectors32,
                                                   dtype=np.float64)).max(initial=0.0)) * (1 + 2 * U32)
        column_of = np.full(n_vectors, -1, dtype=np.int64)
        column_of[order] = np.arange(len(order))
        self._layout_blocks(pattern[order])
        self.categories = [self._category(column_of[np.asarray(v, dtype=np.int64)], c)
                           for c, v in enumerate(sample_vectors)]
        self._local = threading.local()
        self._groupings: dict[int, _Grouping] = {}

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
        return _Category(starts, order.astype(np.int64), counts, (self.block_patterns >> c) & 1 == 1)

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
        self.space = space
        self.of_category = []  # per category: its group columns (None: all)
        for category in space.categories:
            if category.blocks.all():
                self.of_category.append(None)
            else:
                self.of_category.append(np.concatenate(
                    [np.arange(self.offsets[b], self.offsets[b + 1]) for b in np.flatnonzero(category.blocks)]
                    or [np.empty(0, np.int64)]))

    def maxima(self, values: np.ndarray) -> np.ndarray:
        """(queries, groups) maximum of each group."""
        space, b = self.space, len(values)
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
    categories = list(range(len(space.categories)))
    rows = np.arange(len(queries)) if rows is None else np.asarray(rows, dtype=np.int64)
    ks = [min(int(k), space.categories[c].n_samples) for c in categories]
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
        for f, result in zip(found, _search_block(space, q64, categories, ks)):
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


def _search_block(space: SearchSpace, q64: np.ndarray, categories: list[int],
                  ks: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    if not np.isfinite(q64).all():
        raise PerceptError("the query vectors contain NaN or infinite values: re-encode the images")
    b = len(q64)
    values = space.buffer(b)
    np.matmul(q64.astype(np.float32), space.vectors32.T, out=values)
    eps = absolute_error(space.dim, np.sqrt(np.einsum("ij,ij->i", q64, q64)), space.vector_norm)
    grouping = space.grouping(max(ks))
    maxima = grouping.maxima(values)
    cuts = {}
    for c, kc in zip(categories, ks):
        if kc > 0:
            cuts[c] = grouping.first_cut(maxima, c, kc) - 2 * eps
    rows, cols, vals = _candidates(space, values, cuts)
    kept = {c: _sample_cut(space.categories[c], rows, cols, vals, cut, kc, eps, b)
            for (c, cut), kc in zip(cuts.items(), [k for k in ks if k > 0])}
    keys = np.unique(np.concatenate([r * space.n_columns + col for r, col in kept.values()] or
                                    [np.empty(0, np.int64)]))
    sims = _similarities(space, q64, keys // space.n_columns, keys % space.n_columns)
    out = []
    for c, kc in zip(categories, ks):
        if kc == 0:
            out.append((np.empty((b, 0), np.int64), np.empty((b, 0))))
            continue
        r, col = kept[c]
        s = sims[np.searchsorted(keys, r * space.n_columns + col)]
        out.append(_first_samples(space.categories[c], r, col, s, kc, b))
    return out


def _float32_floor(values: np.ndarray) -> np.ndarray:
    """Float32 values no larger than ``values`` (so a float32 comparison never cuts too much)."""
    rounded = values.astype(np.float32)
    return np.where(rounded > values, np.nextafter(rounded, np.float32(-np.inf)), rounded)


def _candidates(space: SearchSpace, values: np.ndarray, cuts: dict[int, np.ndarray]):
    """(query, column, float32 value) of every column at or above the lowest cut of its block's categories."""
    rows, cols, vals = [], [], []
    b = len(values)
    for block, (start, stop, pattern) in enumerate(zip(space.block_starts, space.block_stops,
                                                       space.block_patterns)):
        users = [cut for c, cut in cuts.items() if (pattern >> c) & 1]
        if not users:
            continue
        cut = _float32_floor(np.minimum.reduce(users))
        hits = np.flatnonzero(values[:, start:stop] >= cut[:, None])
        r, col = np.divmod(hits, stop - start)
        col += start
        rows.append(r)
        cols.append(col)
        vals.append(values[r, col])
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _row_starts(rows: np.ndarray, b: int) -> np.ndarray:
    return np.searchsorted(rows, np.arange(b + 1))


def _sample_cut(category: _Category, rows, cols, vals, cut, k, eps, b) -> tuple[np.ndarray, np.ndarray]:
    """The candidates of ``category``, cut again at its exact float32 K-th value over samples."""
    mine = (vals >= cut[rows]) & (category.counts[cols] > 0)
    rows, cols, vals = rows[mine], cols[mine], vals[mine]
    order = np.lexsort((-vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    total = np.cumsum(category.counts[cols])
    before = np.concatenate([[0], total])[_row_starts(rows, b)[:-1]]
    kth = np.searchsorted(total, before + k)
    keep = vals >= (vals[kth].astype(np.float64) - 2 * eps)[rows]
    return rows[keep], cols[keep]


def _similarities(space: SearchSpace, q64: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Float64 similarity of each (query, column) pair; pairs sorted by query."""
    sims = np.empty(len(rows), dtype=np.float64)
    if not len(rows):
        return sims
    starts = _row_starts(rows, len(q64))
    counts = np.diff(starts)
    busy = np.flatnonzero(counts)
    busy = busy[np.argsort(counts[busy], kind="stable")]
    i = 0
    while i < len(busy):
        take = max(1, GATHER_VALUES // (counts[busy[i]] * space.dim))
        while take > 1 and take * counts[busy[min(i + take, len(busy)) - 1]] * space.dim > GATHER_VALUES:
            take //= 2
        chunk = busy[i:i + take]
        width = int(counts[chunk[-1]])
        step = np.minimum(np.arange(width), counts[chunk][:, None] - 1)
        pairs = starts[chunk][:, None] + step
        gathered = rows64(space.source, space.column_rows[cols[pairs]])
        sims[pairs] = np.matmul(gathered, q64[chunk][:, :, None])[..., 0]
        i += take
    return sims


def _first_samples(category: _Category, rows, cols, sims, k, b) -> tuple[np.ndarray, np.ndarray]:
    """Expand (query, column) pairs to samples; per query the first K by (-similarity, sample position)."""
    counts = category.counts[cols]
    pair = np.repeat(np.arange(len(cols)), counts)
    within = np.arange(len(pair)) - np.repeat(np.cumsum(counts) - counts, counts)
    samples = category.samples[category.starts[cols][pair] + within]
    query, sample_sims = rows[pair], sims[pair]
    order = np.lexsort((samples, -sample_sims, query))
    take = _row_starts(query[order], b)[:-1, None] + np.arange(k)
    return samples[order][take], sample_sims[order][take]
