"""Distinct vectors by content: rows holding equal vectors become one vector with several samples.

Two images with equal embeddings, or one image rated many times, give equal rows. Searching
each distinct vector once makes equal vectors tie exactly (they share one similarity), so
the tie rule (the earlier training sample first) decides between them.
"""

from __future__ import annotations

import numpy as np

_RNG_SEED = 0x5EED


def row_keys(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes (equal rows, equal keys)."""
    rows = np.ascontiguousarray(rows)
    words = rows.view(np.uint8).reshape(len(rows), -1)
    pad = (-words.shape[1]) % 8
    if pad:
        words = np.hstack([words, np.zeros((len(rows), pad), dtype=np.uint8)])
    words = np.ascontiguousarray(words).view(np.uint64)
    multipliers = np.random.default_rng(_RNG_SEED).integers(1, 2 ** 63, words.shape[1], dtype=np.uint64) | 1
    with np.errstate(over="ignore"):
        mixed = words * multipliers
        mixed ^= mixed >> np.uint64(29)
        return mixed.sum(axis=1, dtype=np.uint64)


def distinct_vectors(screen: np.ndarray, exact) -> tuple[np.ndarray, np.ndarray]:
    """Group rows into distinct vectors: (first row of each distinct vector, distinct vector of each row).

    ``screen`` holds one array row per row (for example the float32 rounding): rows whose screen
    rows differ are distinct. Rows that agree on screen are compared exactly with ``exact(rows)``
    (their float64 values). Distinct vectors are numbered in order of their first row.
    """
    n = len(screen)
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    _, first, inverse = np.unique(row_keys(screen), return_index=True, return_inverse=True)
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
