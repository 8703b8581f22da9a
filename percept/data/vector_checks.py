"""Rows of vectors that cannot be compared: NaN or infinite values, and zero vectors.

One vectorised pass finds both. With the sign bit cleared, the bits of a float order
like its magnitude, so a row's largest such bit pattern tells everything: it reaches
the pattern of infinity when the row holds an infinity or a NaN, and it is 0 when the
row is all zeros. The pass runs over bounded chunks of rows, so it needs little memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from percept.errors import PerceptError

#: Most rows examined at once (bounds the temporary bit arrays).
CHUNK_ROWS = 4096
#: Most bytes of rows examined at once: chunks that stay in the CPU's cache pass over the rows about twice as fast.
CHUNK_BYTES = 512 * 1024
#: Per float size: the unsigned type of its bits, the magnitude mask and the bits of infinity.
_BITS = {
    2: (np.uint16, 0x7FFF, 0x7C00),
    4: (np.uint32, 0x7FFF_FFFF, 0x7F80_0000),
    8: (np.uint64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000),
}


class BadVectors(PerceptError):
    """Vectors that hold NaN or infinite values, or are zero, where they must not."""


@dataclass(frozen=True)
class RowCheck:
    """Row positions (ascending) that hold NaN or infinite values, and those that are all zero."""

    nonfinite: np.ndarray
    zero: np.ndarray


def check_rows(vectors: np.ndarray) -> RowCheck:
    """Find the non-finite rows and the zero rows of a 2-D array."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"expected rows of vectors, got an array of shape {vectors.shape}")
    nonfinite, zero = np.empty(len(vectors), dtype=bool), np.empty(len(vectors), dtype=bool)
    step = max(1, min(CHUNK_ROWS, CHUNK_BYTES // max(1, vectors.shape[1] * vectors.itemsize)))
    for start in range(0, len(vectors), step):
        nonfinite[start:start + step], zero[start:start + step] = _chunk_flags(vectors[start:start + step])
    return RowCheck(np.flatnonzero(nonfinite), np.flatnonzero(zero))


def _chunk_flags(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kind, size = rows.dtype.kind, rows.dtype.itemsize
    if kind == "f" and size in _BITS:
        unsigned, mask, infinity = _BITS[size]
        magnitude = (np.ascontiguousarray(rows).view(unsigned) & unsigned(mask)).max(axis=1, initial=0)
        return magnitude >= infinity, magnitude == 0
    zero = ~np.asarray(rows.any(axis=1))
    if kind in "fc":
        return ~np.asarray(np.isfinite(rows).all(axis=1)), zero
    return np.zeros(len(rows), dtype=bool), zero


#: Names a row for a message, with the file holding it (e.g. ``emb/img_emb_0.npy row 7 (a.jpg)``).
Where = Callable[[int], str]


def refuse_rows(rows: np.ndarray, where: Where, problem: str, fix: str) -> None:
    """Raise :class:`BadVectors` naming the first of ``rows`` and how many more there are (nothing when empty).

    ``problem`` says what is wrong with the rows, ``fix`` what to do.
    """
    if len(rows) == 0:
        return
    others = f" and {len(rows) - 1} more row{'s' if len(rows) > 2 else ''}" if len(rows) > 1 else ""
    raise BadVectors(f"{where(int(rows[0]))}{others} {problem}: {fix}")


def nonfinite_problem(count: int) -> str:
    """``holds NaN or infinite values`` (one row) or ``hold ...`` (several)."""
    return ("holds" if count == 1 else "hold") + " NaN or infinite values"


def zero_problem(count: int) -> str:
    """``is a zero vector ...`` (one row) or ``are zero vectors ...`` (several)."""
    return ("is a zero vector" if count == 1 else "are zero vectors") + " (no direction to compare)"


def refuse_nonfinite(check: RowCheck, where: Where, fix: str) -> None:
    """Refuse rows with NaN or infinite values (see :func:`refuse_rows`)."""
    refuse_rows(check.nonfinite, where, nonfinite_problem(len(check.nonfinite)), fix)


def refuse_zero(rows: np.ndarray, where: Where, fix: str) -> None:
    """Refuse zero rows (see :func:`refuse_rows`)."""
    refuse_rows(rows, where, zero_problem(len(rows)), fix)


def refuse_unusable(vectors: np.ndarray, where: Where, fix: str) -> None:
    """Refuse any row with NaN or infinite values, then any zero row."""
    check = check_rows(vectors)
    refuse_nonfinite(check, where, fix)
    refuse_zero(check.zero, where, fix)
