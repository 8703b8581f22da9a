"""Distinct vectors by content: rows holding equal vectors become one vector with several samples.

Two images with equal embeddings, or one image rated many times, give equal rows. Searching
each distinct vector once makes equal vectors tie exactly (they share one similarity), so
the tie rule (the earlier training sample first) decides between them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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
