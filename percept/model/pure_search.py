"""The exact search's compiled steps in plain numpy: the same results, bit for bit, slower.

Used where the C extensions were not built, or with ``PERCEPT_PURE=1`` (:mod:`percept.model.kernels`
decides), and the reference the tests hold the compiled kernels to. For a block of queries whose
screen values lie within ``eps`` of their float64 similarities:

1. Each category's cut: its K-th largest screen value minus ``2 eps``. K distinct vectors, so K samples,
   have float64 similarity at least that value minus ``eps``; a vector screened below the cut is less
   similar than all of them, so it cannot be a neighbour.
2. Float64 similarities of the vectors past any category's cut, summed as the compiled kernels sum them
   (:func:`fixed_order_sums`), so every similarity has the same bits.
3. Each category's samples of those vectors ordered by (similarity descending, sample ascending); the first
   K are the neighbours. Equal vectors share one column, so they tie exactly and the earlier sample wins.
"""

from __future__ import annotations

import numpy as np

#: Partial sums per dot product, as in the compiled kernels (``LANES`` in ``_kernels.c``).
LANES = 32
#: Rows summed at once (bounds the float64 scratch to CHUNK x dim).
CHUNK = 1024


def fixed_order_sums(terms: np.ndarray) -> np.ndarray:
    """The sum over the last axis in the compiled kernels' order (each term already rounded).

    Term k of each step of LANES goes to partial sum k mod LANES; the partial sums are added pairwise (halves,
    quarters, ...), and the terms after the last whole step one at a time.
    """
    dim = terms.shape[-1]
    whole = dim - dim % LANES
    lanes = np.zeros(terms.shape[:-1] + (LANES,))
    for start in range(0, whole, LANES):
        lanes += terms[..., start:start + LANES]
    width = LANES // 2
    while width:
        lanes[..., :width] += lanes[..., width:2 * width]
        width //= 2
    total = lanes[..., 0].copy()
    for k in range(whole, dim):
        total += terms[..., k]
    return total


def gather_float32(stored: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[j] = stored[rows[j]]`` as float32 (float16 and float32 convert exactly)."""
    rows = np.asarray(rows)
    outside = (rows < 0) | (rows >= len(stored))
    if outside.any():
        at = int(np.flatnonzero(outside)[0])
        raise IndexError(f"rows[{at}] = {rows[at]} is outside 0..{len(stored) - 1}")
    out[...] = stored[rows]


def unit_rows(stored: np.ndarray, rows: np.ndarray, norms: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = float16 row ``rows[i]`` over its float64 norm: ``norms[i]``, or where that is NaN the row's
    norm, written there (zero rows stay zero)."""
    wide = np.empty((len(rows), stored.shape[1]), dtype=np.float32)
    gather_float32(stored, rows, wide)
    fresh = np.isnan(norms)
    if fresh.any():
        sums = np.empty(int(fresh.sum()))
        sums_of_squares(wide[fresh], sums)
        norms[fresh] = np.sqrt(sums)
    np.divide(wide, np.where(norms == 0, 1.0, norms)[:, None], out=out)


def quotient_vectors(numerators: np.ndarray, rows: np.ndarray, divisors: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = float16 row ``rows[i]`` of ``numerators`` over ``divisors[i]``, correctly rounded."""
    wide = np.empty((len(rows), numerators.shape[1]), dtype=np.float32)
    gather_float32(numerators, rows, wide)
    np.divide(wide, divisors[:, None], out=out)


def sums_of_squares(stored: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = the sum of the squares of row i in float64, in the kernels' order."""
    for start in range(0, len(stored), CHUNK):
        rows = np.asarray(stored[start:start + CHUNK], dtype=np.float64)
        out[start:start + CHUNK] = fixed_order_sums(rows * rows)


def similarities(queries: np.ndarray, matrix: np.ndarray, rows: np.ndarray, stored_rows: np.ndarray,
                 row_divisors: np.ndarray | None = None) -> np.ndarray:
    """Float64 similarity of query ``rows[i]`` with matrix row ``stored_rows[i]`` (divided element by element by
    ``row_divisors[stored_rows[i]]`` where given: quotient rows), summed in the kernels' order."""
    out = np.empty(len(rows))
    for start in range(0, len(rows), CHUNK):
        part = slice(start, start + CHUNK)
        stored = matrix[stored_rows[part]].astype(np.float64)
        if row_divisors is not None:
            stored /= row_divisors[stored_rows[part]][:, None]
        out[part] = fixed_order_sums(queries[rows[part]] * stored)
    return out


def kth_cut(screened: np.ndarray, k: int, eps: np.ndarray) -> np.ndarray:
    """Each query's cut: the K-th largest of its screened values minus ``2 eps`` (-inf with fewer than K)."""
    n = screened.shape[1]
    if n < k:
        return np.full(len(screened), -np.inf)
    kth = np.partition(screened, n - k, axis=1)[:, n - k]
    return kth.astype(np.float64) - 2 * eps


def select_neighbours(*, values: np.ndarray, queries: np.ndarray, eps: np.ndarray, matrix: np.ndarray,
                      ks: np.ndarray, starts: np.ndarray, counts: np.ndarray, samples: np.ndarray,
                      sample_offsets: np.ndarray, index: tuple[np.ndarray, ...], similarity: tuple[np.ndarray, ...],
                      matrix_rows: np.ndarray | None = None, divisors: np.ndarray | None = None,
                      row_divisors: np.ndarray | None = None) -> None:
    """Each category's K nearest samples of a block of screened queries, into ``index[c]`` and ``similarity[c]``.

    ``values`` (queries, columns): screen values, each within ``eps`` (per query) of the float64 similarity;
    column j's float64 row is ``matrix[matrix_rows[j]]`` (``matrix[j]`` without them), its similarity divided by
    ``divisors[j]`` where given; with ``row_divisors``, matrix row i holds float16 numerators and the float64 row
    is their quotients by ``row_divisors[i]``. Category c has ``counts[c, j]`` samples on column j, numbered
    ``samples[sample_offsets[c] + starts[c, j]:][:counts[c, j]]``, and ``ks[c]`` neighbours are wanted.
    """
    eps = np.asarray(eps, dtype=np.float64)
    cuts: dict[int, np.ndarray] = {}
    past = np.zeros(values.shape, dtype=bool)  # past some category's cut
    for c, k in enumerate(ks):
        if k:
            mine = counts[c] > 0  # the category's columns
            cuts[c] = kth_cut(values if mine.all() else values[:, mine], int(k), eps)
            past |= (values >= cuts[c][:, None]) & mine
    rows, columns = np.nonzero(past)
    sims = similarities(queries, matrix, rows, columns if matrix_rows is None else matrix_rows[columns], row_divisors)
    if divisors is not None:
        sims /= divisors[columns]
    for c, cut in cuts.items():
        mine = (counts[c][columns] > 0) & (values[rows, columns] >= cut[rows])
        own = samples[sample_offsets[c]:sample_offsets[c + 1]]
        index[c][...], similarity[c][...] = first_samples(rows[mine], columns[mine], sims[mine], starts[c], own,
                                                          len(values), int(ks[c]))


def first_samples(rows: np.ndarray, columns: np.ndarray, sims: np.ndarray, starts: np.ndarray,
                  samples: np.ndarray, n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(samples, similarities) of each query's first K samples by (similarity descending, sample ascending),
    from the (query, column, similarity) of its candidates; column j holds ``samples[starts[j]:starts[j + 1]]``."""
    per_column = starts[columns + 1] - starts[columns]
    pair = np.repeat(np.arange(len(columns)), per_column)  # each sample's candidate
    within = np.arange(len(pair)) - np.repeat(np.cumsum(per_column) - per_column, per_column)
    sample = samples[starts[columns][pair] + within]
    query, sim = rows[pair], sims[pair]
    order = np.lexsort((sample, -sim, query))
    first = np.searchsorted(query[order], np.arange(n_queries))
    found = np.diff(np.append(first, len(order)))
    if (found < k).any():
        raise ValueError(f"select_neighbours: fewer than K samples passed the cut for query "
                         f"{int(np.flatnonzero(found < k)[0])}: its values or bound are not those of one screen")
    take = order[first[:, None] + np.arange(k)]
    return sample[take], sim[take]
