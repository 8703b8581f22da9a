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

from percept.model.kernels import gather_float32, sums_of_squares, unit_rows

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

    def span(self, start: int, stop: int) -> UnitRows:
        """Rows ``start:stop`` as unit rows of their own, sharing these stored rows and norms (nothing widened)."""
        return UnitRows(self.raw[start:stop], self._norms[start:stop])

    def __getitem__(self, index: RowIndex | tuple[RowIndex, ...]) -> np.ndarray:
        """Float64 unit rows; an integer array, slice or mask selects rows (an int gives one row)."""
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        if isinstance(index, tuple):
            return self[index[0]][(slice(None),) + index[1:]]
        rows = np.arange(len(self.raw))[index]
        out = np.empty((rows.size, self.raw.shape[1]))
        self._unit_into(rows.reshape(-1), out)
        return out.reshape(*rows.shape, self.raw.shape[1])

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.raw.shape)
        for start in range(0, len(self.raw), CHUNK):
            self._unit_into(np.arange(start, min(start + CHUNK, len(self.raw))), out[start:start + CHUNK])
        return out if dtype is None else out.astype(dtype, copy=False)

    def _unit_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        """``out[i]`` = the float64 unit row of stored row ``rows[i]``: its values as float64 over its float64 norm
        (zero rows stay zero), divided in place in ``out``; norms are kept on the way."""
        if self.raw.dtype == np.float16 and out.flags.c_contiguous:  # a row at a time, in one pass
            norms = self._norms[rows]
            unit_rows(np.ascontiguousarray(self.raw), np.ascontiguousarray(rows, dtype=np.int64), norms, out)
            self._norms[rows] = norms
            return
        exact = self._exact(rows)
        fresh = np.isnan(self._norms[rows])
        if fresh.any():
            self._norms[rows[fresh]] = row_norms(exact if fresh.all() else exact[fresh])
        norms = self._norms[rows]
        out[...] = exact
        np.divide(out, np.where(norms == 0, 1.0, norms)[:, None], out=out)

    def _exact(self, rows: np.ndarray) -> np.ndarray:
        """The stored rows ``rows`` in a float type that holds them exactly: float16 as float32 (a fast, exact
        conversion straight from storage), float32 and float64 as stored, other types as float64."""
        if self.raw.dtype == np.float16:
            wide = np.empty((len(rows), self.raw.shape[1]), dtype=np.float32)
            gather_float32(np.ascontiguousarray(self.raw), np.ascontiguousarray(rows, dtype=np.int64), wide)
            return wide
        if self.raw.dtype in FLOATS:
            return self.raw[rows]
        return self.raw[rows].astype(np.float64)

    def float32(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Float32 rounding of the float64 unit rows ``rows`` (all by default), a chunk at a time."""
        rows = np.arange(len(self.raw)) if rows is None else np.asarray(rows)
        out = np.empty((len(rows), self.raw.shape[1]), dtype=np.float32)
        for start in range(0, len(rows), CHUNK):
            out[start:start + CHUNK] = self[rows[start:start + CHUNK]]
        return out


#: What searches and models read rows from: float64 rows of an array, or unit rows of stored vectors.
Rows: TypeAlias = np.ndarray | UnitRows


def row_span(rows: Rows, start: int, stop: int) -> Rows:
    """Rows ``start:stop`` of an array (a view) or of unit rows (:meth:`UnitRows.span`)."""
    return rows.span(start, stop) if isinstance(rows, UnitRows) else rows[start:stop]
