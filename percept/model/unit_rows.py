"""Rows of vectors scaled to unit length when read, so a float16 matrix is never held in float64.

:class:`UnitRows` keeps the rows as stored (float16 embeddings stay float16) with each row's
float64 norm. Reading rows (``unit[rows]``, ``np.asarray(unit)``) gives float64 unit rows,
bit for bit those of :func:`l2_normalise`; :meth:`UnitRows.float32` gives their float32
rounding for the similarity search without a float64 copy of the whole matrix.
"""

from __future__ import annotations

import numpy as np

#: Rows converted at a time (bounds the float64 scratch to CHUNK x dim).
CHUNK = 256


def float64_rows(raw: np.ndarray) -> np.ndarray:
    """A float64 copy of ``raw``; float16 goes through float32, which is exact and much faster."""
    if raw.dtype == np.float16:
        return raw.astype(np.float32).astype(np.float64)
    return np.array(raw, dtype=np.float64)


def row_norms(raw: np.ndarray) -> np.ndarray:
    """Float64 Euclidean norm of each row, a chunk at a time."""
    raw = np.asarray(raw)
    norms = np.empty(len(raw), dtype=np.float64)
    for start in range(0, len(raw), CHUNK):
        part = float64_rows(raw[start:start + CHUNK])
        norms[start:start + CHUNK] = np.sqrt(np.einsum("ij,ij->i", part, part))
    return norms


def _scale(part: np.ndarray, norms: np.ndarray) -> np.ndarray:
    divisors = norms.copy()
    divisors[divisors == 0] = 1.0  # zero rows stay zero
    part /= divisors[..., None]
    return part


class UnitRows:
    """Float64 unit rows computed on access from stored rows and their norms."""

    def __init__(self, raw: np.ndarray, norms: np.ndarray | None = None):
        raw = np.asarray(raw)
        if raw.ndim != 2:
            raise ValueError(f"UnitRows needs a 2-D array of rows, got shape {raw.shape}")
        self.raw = raw
        self.norms = row_norms(raw) if norms is None else np.asarray(norms, dtype=np.float64)

    shape = property(lambda self: self.raw.shape)
    ndim = 2
    dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index) -> np.ndarray:
        """Float64 unit rows; an integer array, slice or mask selects rows (an int gives one row)."""
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        if isinstance(index, tuple):
            return self[index[0]][(slice(None),) + index[1:]]
        return _scale(float64_rows(self.raw[index]), self.norms[index])

    def __array__(self, dtype=None, copy=None):
        out = _scale(float64_rows(self.raw), self.norms)
        return out if dtype is None else out.astype(dtype, copy=False)

    def take(self, rows: np.ndarray) -> "UnitRows":
        """The rows ``rows`` as a smaller UnitRows (stored rows copied, nothing converted)."""
        rows = np.asarray(rows)
        return UnitRows(self.raw[rows], self.norms[rows])

    def float32(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Float32 rounding of the float64 unit rows ``rows`` (all by default), a chunk at a time."""
        rows = np.arange(len(self.raw)) if rows is None else np.asarray(rows)
        out = np.empty((len(rows), self.raw.shape[1]), dtype=np.float32)
        for start in range(0, len(rows), CHUNK):
            out[start:start + CHUNK] = self[rows[start:start + CHUNK]]
        return out
