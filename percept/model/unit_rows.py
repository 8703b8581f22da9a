"""Rows of vectors scaled to unit length when read, so a float16 matrix is never held in float64.

:class:`UnitRows` keeps the rows as stored (float16 embeddings stay float16) with each row's
float64 norm. Reading rows (``unit[rows]``, ``np.asarray(unit)``) gives float64 unit rows,
bit for bit those of :func:`l2_normalise`; :meth:`UnitRows.float32` gives their float32
rounding for the similarity search without a float64 copy of the whole matrix.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
from numpy.typing import DTypeLike

from percept.model.kernels import gather_float32, sums_of_squares

#: Rows converted at a time (bounds the float64 scratch to CHUNK x dim).
CHUNK = 256
#: Row types whose norms are summed straight from the stored rows.
FLOATS = (np.float16, np.float32, np.float64)


def row_norms(rows: np.ndarray) -> np.ndarray:
    """Float64 Euclidean norm of each row (the one formula every norm here comes from).

    Squares are summed in float64 whatever the stored type (float16 and float32 convert exactly),
    so a row has the same norm stored as float16, float32 or float64.
    """
    rows = np.asarray(rows)
    if rows.dtype not in FLOATS:
        rows = rows.astype(np.float64)
    sums = np.empty(len(rows), dtype=np.float64)
    sums_of_squares(np.ascontiguousarray(rows), sums)
    return np.sqrt(sums)


def _scale(part: np.ndarray, norms: np.ndarray) -> np.ndarray:
    divisors = norms.copy()
    divisors[divisors == 0] = 1.0  # zero rows stay zero
    part /= divisors[..., None]
    return part


#: Rows (or, after the first, columns) of an array: a position, a slice, positions or a mask.
RowIndex: TypeAlias = int | np.integer | slice | np.ndarray | list[int]


class UnitRows:
    """Float64 unit rows computed on access from stored rows and their norms.

    Norms are computed when their rows are first read (from the same conversion), so rows that
    are never read are never converted.
    """

    def __init__(self, raw: np.ndarray, norms: np.ndarray | None = None):
        raw = np.asarray(raw)
        if raw.ndim != 2:
            raise ValueError(f"UnitRows needs a 2-D array of rows, got shape {raw.shape}")
        self.raw = raw
        self._norms = np.full(len(raw), np.nan) if norms is None else np.asarray(norms, dtype=np.float64)

    shape = property(lambda self: self.raw.shape)
    ndim = 2
    dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def norms(self) -> np.ndarray:
        """The float64 norm of every stored row."""
        return self.norms_of(np.arange(len(self.raw)))

    def norms_of(self, rows: np.ndarray) -> np.ndarray:
        """The float64 norms of the stored rows ``rows``."""
        rows = np.asarray(rows)
        missing = np.unique(rows[np.isnan(self._norms[rows])])
        for start in range(0, len(missing), CHUNK):
            part = missing[start:start + CHUNK]
            self._norms[part] = row_norms(self.raw[part])
        return self._norms[rows]

    def stored64(self, rows: np.ndarray | slice) -> np.ndarray:
        """Float64 copies of the stored rows ``rows`` (not normalised); their norms are kept on the way."""
        flat = np.asarray(rows).reshape(-1) if not isinstance(rows, slice) else np.arange(len(self.raw))[rows]
        if self.raw.dtype == np.float16:  # through float32, which is exact and much faster, straight from storage
            wide = np.empty((len(flat), self.raw.shape[1]), dtype=np.float32)
            gather_float32(np.ascontiguousarray(self.raw), flat.astype(np.int64, copy=False), wide)
            shape = flat.shape if isinstance(rows, slice) else np.shape(rows)
            part = wide.astype(np.float64).reshape(*shape, self.raw.shape[1])
        else:
            part = np.array(self.raw[rows], dtype=np.float64)
        fresh = np.isnan(self._norms[flat])
        if fresh.any():
            self._norms[flat[fresh]] = row_norms(part.reshape(-1, part.shape[-1])[fresh])
        return part

    def __getitem__(self, index: RowIndex | tuple[RowIndex, ...]) -> np.ndarray:
        """Float64 unit rows; an integer array, slice or mask selects rows (an int gives one row)."""
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        if isinstance(index, tuple):
            return self[index[0]][(slice(None),) + index[1:]]
        rows = np.arange(len(self.raw))[index]
        part = self.stored64(rows)
        return _scale(part, self._norms[rows])

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.raw.shape)
        for start in range(0, len(self.raw), CHUNK):
            out[start:start + CHUNK] = self[start:start + CHUNK]
        return out if dtype is None else out.astype(dtype, copy=False)

    def float32(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Float32 rounding of the float64 unit rows ``rows`` (all by default), a chunk at a time."""
        rows = np.arange(len(self.raw)) if rows is None else np.asarray(rows)
        out = np.empty((len(rows), self.raw.shape[1]), dtype=np.float32)
        for start in range(0, len(rows), CHUNK):
            out[start:start + CHUNK] = self[rows[start:start + CHUNK]]
        return out


#: What searches and models read rows from: float64 rows of an array, or unit rows of stored vectors.
Rows: TypeAlias = np.ndarray | UnitRows
