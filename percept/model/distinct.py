"""Distinct vectors by content: rows holding equal vectors become one vector with several samples.

Two images with equal embeddings, or one image rated many times, give equal rows. Searching
each distinct vector once makes equal vectors tie exactly (they share one similarity), so
the tie rule (the earlier training sample first) decides between them. :func:`distinct_rows` finds
the distinct rows over several arrays (a model's categories) on the worker threads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from percept.model.exact_search import on_workers

#: 2^64 / golden ratio: multiples of it spread over all 64 bits (Fibonacci hashing).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def row_keys(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes (equal rows, equal keys)."""
    rows = np.ascontiguousarray(rows)
    words = rows.view(np.uint8).reshape(len(rows), -1)
    pad = (-words.shape[1]) % 8
    if pad:
        words = np.hstack([words, np.zeros((len(rows), pad), dtype=np.uint8)])
    words = np.ascontiguousarray(words).view(np.uint64)
    with np.errstate(over="ignore"):
        multipliers = (np.arange(1, words.shape[1] + 1, dtype=np.uint64) * _GOLDEN) | np.uint64(1)
        mixed = words * multipliers
        mixed ^= mixed >> np.uint64(29)
        return mixed.sum(axis=1, dtype=np.uint64)


def distinct_vectors(keys: np.ndarray, exact: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Group rows into distinct vectors: (first row of each distinct vector, distinct vector of each row).

    ``keys`` holds one value per row that equal rows share (a hash, or the row's norm); rows with
    different keys are distinct. Rows that share a key are compared exactly on ``exact(rows)`` (their
    values). Distinct vectors are numbered in order of their first row.
    """
    n = len(keys)
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    counts = np.bincount(inverse)
    owner = first[inverse]  # candidate representative of each row: the first row with its key
    shared = np.flatnonzero(counts[inverse] > 1)
    shared = shared[np.argsort(inverse[shared], kind="stable")]
    for members in np.split(shared, np.flatnonzero(np.diff(inverse[shared])) + 1) if len(shared) else []:
        values = exact(members)
        _, first_local, local = np.unique(values, axis=0, return_index=True, return_inverse=True)
        owner[members] = members[first_local[local.ravel()]]
    firsts = np.unique(owner)
    return firsts, np.searchsorted(firsts, owner)


#: Columns, spread over the row, whose bits group rows before rows of a group are compared whole.
KEY_COLUMNS = 16


def distinct_rows(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct rows over several arrays, in order of first appearance, and each array's row → distinct position.

    Rows are grouped by a hash of :data:`KEY_COLUMNS` of their values, and each row that repeats the first row of
    its group is compared with it bit for bit: only the repeats are read whole (hashing every row whole took about
    three times as long). Should rows of a group differ, rows are grouped by a hash of all their bytes instead (and,
    should that collide too, by the bytes themselves).
    """
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]
    dim = arrays[0].shape[1] if arrays else 0
    if not arrays or not sum(len(a) for a in arrays):
        return np.empty((0, dim)), [np.empty(0, np.int64) for _ in arrays]
    # on the worker threads: numpy lets go of the GIL while it hashes and compares rows
    columns = np.unique(np.linspace(0, dim - 1, min(dim, KEY_COLUMNS)).astype(np.int64))
    for keys in (lambda: np.concatenate([_chunked_keys(a[:, columns]) for a in arrays]),
                 lambda: np.concatenate(on_workers(_chunked_keys, arrays))):
        kept, positions, repeats = _first_rows(arrays, keys())
        checks = zip(arrays, [kept] * len(arrays), positions, repeats)
        if all(on_workers(lambda check: _repeats_equal(*check), checks)):
            return kept, positions
    return _distinct_rows_by_bytes(arrays)  # a 64-bit hash collision: group by the full bytes


def _first_rows(arrays: list[np.ndarray], keys: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The first row of each distinct key, in order of first appearance, each array's row → its position, and
    each array's rows that repeat an earlier row's key."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)  # distinct vectors numbered by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    where = rank[inverse.ravel()]
    bounds = np.cumsum([0] + [len(a) for a in arrays])
    owners = first[order]  # ascending: each array's first rows are one run of the distinct rows
    runs = np.searchsorted(owners, bounds)
    kept = np.empty((len(owners), arrays[0].shape[1]))
    # "clip": straight into kept (the default mode writes to a buffer first); the positions are all in range
    on_workers(lambda a: np.take(arrays[a], owners[runs[a]:runs[a + 1]] - bounds[a], axis=0,
                                 out=kept[runs[a]:runs[a + 1]], mode="clip"), range(len(arrays)))
    positions = [where[bounds[a]:bounds[a + 1]] for a in range(len(arrays))]
    repeats = [np.flatnonzero(owners[positions[a]] != np.arange(bounds[a], bounds[a + 1])) for a in range(len(arrays))]
    return kept, positions, repeats


def _chunked_keys(array: np.ndarray, chunk: int = 2048) -> np.ndarray:
    return np.concatenate([row_keys(array[s:s + chunk]) for s in range(0, len(array), chunk)] or
                          [np.empty(0, np.uint64)])


def _repeats_equal(array: np.ndarray, kept: np.ndarray, pos: np.ndarray, repeats: np.ndarray,
                   chunk: int = 256) -> bool:
    """Whether rows ``repeats`` of ``array`` hold the bits of their distinct rows ``kept[pos[repeats]]`` (gathered a
    chunk at a time into two buffers that stay in the CPU's cache)."""
    bits, kept_bits = array.view(np.uint64), kept.view(np.uint64)
    mine, theirs = np.empty((chunk, bits.shape[1]), np.uint64), np.empty((chunk, bits.shape[1]), np.uint64)
    for start in range(0, len(repeats), chunk):
        rows = repeats[start:start + chunk]
        np.take(bits, rows, axis=0, out=mine[:len(rows)], mode="clip")  # positions in range: no bounds pass
        np.take(kept_bits, pos[rows], axis=0, out=theirs[:len(rows)], mode="clip")
        if not np.array_equal(mine[:len(rows)], theirs[:len(rows)]):
            return False
    return True


def _distinct_rows_by_bytes(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    seen: dict[bytes, int] = {}
    kept: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    for array in arrays:
        where = np.empty(len(array), dtype=np.int64)
        for i, row in enumerate(array):
            where[i] = seen.setdefault(row.tobytes(), len(seen))
            if where[i] == len(kept):
                kept.append(row)
        positions.append(where)
    return np.stack(kept), positions
