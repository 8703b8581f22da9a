"""The first pass of the exact search: every similarity of a block of queries, each within a proven bound.

Two screens give the same neighbours (the bound is what makes the search exact); they differ in speed:

- :class:`Float32Screen`: a float32 matrix product (BLAS) with the columns in float32.
- :class:`TileScreen`: the same columns rounded to bfloat16, multiplied on AMX tiles (Intel Xeon since
  Sapphire Rapids) and summed in float32: three to six times the float32 product's speed on one core. Its
  bound is wider (about 0.004 for unit vectors against 0.00006), so more candidates reach the float64
  re-ranking; it also gives each tile of 16 columns' row maxima, which the selection uses as its groups.

:func:`stored_screen` and :func:`column_screen` take the tiles where the CPU has them and the compiled kernels
run (:mod:`percept.model.kernels`; :func:`use_tiles` switches them off or on). :func:`float16_error` bounds
the re-screening of candidates from float16 copies, :func:`numerator_error` from quotient rows' numerators.
"""

from __future__ import annotations

import numpy as np

from percept.errors import PerceptError
from percept.model import kernels
from percept.model.unit_rows import row_norms

U32 = 2.0 ** -24
U64 = 2.0 ** -53
#: Smallest float32 (and bfloat16) normal number: TDPBF16PS flushes results below it to zero.
TINY = 2.0 ** -126
#: Vectors with an element this large or larger are screened in float32 (bfloat16 products could overflow).
TILE_RANGE = 2.0 ** 50
#: Relative slack over norms computed in float64 (their rounding stays below 2^-30 up to 2^20 dimensions).
NORM_SLACK = 1 + 2.0 ** -30

_tiles_wanted = True


def use_tiles(enabled: bool | None = None) -> bool:
    """Whether new search spaces screen on AMX tiles (where the CPU has them); returns the previous setting.

    ``False`` forces the float32 screen, ``True`` (or ``None``) restores what the CPU supports.
    """
    global _tiles_wanted
    previous = _tiles_wanted and kernels.tiles_available()
    _tiles_wanted = enabled is not False
    return previous


def gamma(n: int, u: float) -> float:
    """Higham's gamma: the relative error bound of ``n`` roundings of unit roundoff ``u``."""
    return n * u / (1 - n * u)


def float32_error(dim: int) -> float:
    """Bound, as a multiple of ``|q| |x|``, on |float32 product value - float64 similarity|.

    For float64 vectors q, x of ``dim`` elements and their float32 roundings q', x' (each element
    within a factor 1 ± u of its value, u = 2^-24): the float32 dot product of q', x' in any
    summation order (BLAS blocking and FMA included) is within g(d) Σ|q'_k x'_k| <= g(d) (1+u)^2 |q||x|
    of q'·x', with g(d) = d u / (1 - d u) (Higham, Accuracy and Stability of Numerical Algorithms,
    §3.1); q'·x' is within (2u + u^2)|q||x| of q·x. When x' is a stored row x scaled in float32 by the
    float32 rounding of 1/|x|, each element is within (2u + u^2) of x/|x|, and when x' is a quotient row's float16
    numerators n scaled by the float32 rounding of the float64 1/d, within (2u + u^2 + 3 u64) of its float64 element
    n/d rounded: still within the bound. The float64 similarity is within the float64 g(d + 4) |q||x| of q·x.
    :func:`absolute_error` adds underflow.
    """
    return gamma(dim, U32) * (1 + U32) ** 3 + 4 * U32 + 4 * U32 ** 2 + gamma(dim + 4, U64)


def absolute_error(dim: int, query_norms: np.ndarray, vector_norm: float) -> np.ndarray:
    """The full bound per query: :func:`float32_error` plus what underflow (values below 2^-126) can add.

    It bounds both the float32 product's value and the exact dot product q'·x' of the float32 roundings.
    """
    return float32_error(dim) * query_norms * vector_norm * (1 + 4 * U64) + underflow(dim, query_norms, vector_norm)


def underflow(dim: int, query_norms: np.ndarray, vector_norm: float) -> np.ndarray:
    """What float32 underflow (results below 2^-126) can add to a dot product of ``dim`` elements."""
    return (3 * dim + 8) * 2.0 ** -149 * (2 + query_norms + vector_norm)


def tile_error(dim: int, query_norms: np.ndarray, query_residuals: np.ndarray, vector_norm: float,
               vector_residual: float) -> np.ndarray:
    """Bound on |tile screen value - q'·x'| for float32 roundings q', x' (add :func:`absolute_error` for the rest).

    With b(v) the bfloat16 rounding of v (subnormals to zero) and r = v - b(v): the screen sums the
    exact products b(q')_k b(x')_k in float32 with at most one rounding per addition (results below
    2^-126 flushed to zero), so it lies within g(d) Σ|b(q')_k b(x')_k| + 2 d 2^-126 of b(q')·b(x')
    (d: dimensions padded to 32); and b(q')·b(x') - q'·x' = b(q')·(-r_x) - r_q·x', within
    |b(q')||r_x| + |r_q||x'| by Cauchy-Schwarz. |b(v)| <= |v| + |r_v|. ``query_norms`` are |q'|,
    ``query_residuals`` |r_q|, ``vector_norm`` and ``vector_residual`` the largest |x'| and |r_x| of the columns.
    """
    padded = -(-dim // 32) * 32
    query = query_norms + query_residuals
    products = gamma(padded, U32) * query * (vector_norm + vector_residual)
    rounding = query * vector_residual + query_residuals * vector_norm
    return (products + rounding) * NORM_SLACK + 2 * padded * TINY


def float16_error(dim: int, query_norms: np.ndarray, vector_norm: float, vector_residual: float) -> np.ndarray:
    """Bound on |re-screened value - q'·x'| when candidates are re-screened from float16 copies of the columns.

    The re-screened value is the float32 dot product of q' with x16 = float16(x'): within g(d) |q'| |x16|
    of q'·x16 in any summation order (plus float32 underflow), and q'·x16 - q'·x' = q'·(x16 - x') is within
    |q'| |x16 - x'|. ``query_norms`` bound |q'| (|q| (1 + u) does), ``vector_residual`` the largest |x16 - x'|.
    """
    products = gamma(dim, U32) * query_norms * (vector_norm + vector_residual)
    return (products + query_norms * vector_residual) * NORM_SLACK + underflow(dim, query_norms, vector_norm)


def numerator_error(dim: int, query_norms: np.ndarray, vector_norm: float) -> np.ndarray:
    """Bound on |re-screened value - q'·x'| when candidates are re-screened from their quotient rows' numerators.

    Column x is the float64 rounding of n / d for float16 numerators n (exact) and a divisor d, so |n| / d is
    within (1 + u) of |x|, and x' = float32(x) within (1 + u)^2 of n / d element by element. The re-screened value
    is the float32 dot product of q' with n (within g(d) |q'| |n| of q'·n in any summation order, plus float32
    underflow), times s = float32(1 / d) (within 1 ± 2u of 1 / d, rounded from float64) and rounded once more: within
    (g(d) (1 + u)^3 + 4u) |q'| |n| / d of q'·n / d, which is within 2u |q'| |n| / d of q'·x'. ``query_norms`` bound
    |q'| (|q| (1 + u) does), ``vector_norm`` the largest |x'|.
    """
    norm = vector_norm * (1 + 4 * U32)  # bounds |n| / d
    products = (gamma(dim, U32) * (1 + U32) ** 3 + 6 * U32) * query_norms * norm
    return products * NORM_SLACK + underflow(dim, query_norms, norm)


def float16_copies(columns32: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, float]:
    """The columns rounded to float16 and the largest |x16 - x'| (the difference is exact in float32)."""
    copies = columns32.astype(np.float16)
    residual = max((float(row_norms(columns32[s:s + chunk] - copies[s:s + chunk]).max(initial=0.0))
                    for s in range(0, len(columns32), chunk)), default=0.0)
    return copies, residual


def aligned_empty(shape: int | tuple[int, ...], dtype: type | np.dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``alignment``-byte boundary: the tile screen's
    loads and stores of 64-byte tile rows each touch one cache line then, not two."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + size].view(dtype).reshape(shape)


NONFINITE_QUERIES = "the query vectors contain NaN or infinite values: re-encode the images"


def query_norms(q64: np.ndarray) -> np.ndarray:
    """Upper bounds on the float64 norms of the query rows (the rounding of the sum of squares included)."""
    return np.sqrt(np.einsum("ij,ij->i", q64, q64)) * (1 + (q64.shape[1] + 2) * U64)


class Float32Screen:
    """Similarities from a float32 matrix product with the columns (n, dim) in float32."""

    def __init__(self, columns32: np.ndarray):
        self.columns32 = columns32
        self.vector_norm = float(row_norms(columns32).max(initial=0.0)) * (1 + 2 * U32)

    #: Whether the screen also gives each tile of 16 columns' row maxima, and whether it runs on BLAS.
    tile_maxima = False
    uses_blas = True

    def similarities(self, q64: np.ndarray, out: np.ndarray,
                     maxima: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Writes the queries' similarities with every column to ``out``; returns each query's error bound and
        an upper bound on its norm."""
        if not np.isfinite(q64).all():
            raise PerceptError(NONFINITE_QUERIES)
        np.matmul(q64.astype(np.float32), self.columns32.T, out=out)
        norms = query_norms(q64)
        return absolute_error(q64.shape[1], norms, self.vector_norm), norms


class TileScreen:
    """Similarities from bfloat16 products on AMX tiles, the columns packed once (half the float32 memory).

    Column j is ``stored[rows[j]] * scales[j]`` (float16 or float32 rows, multiplied in float32), packed
    straight from storage: no float32 copy of the columns is made.
    """

    def __init__(self, stored: np.ndarray, rows: np.ndarray, scales: np.ndarray):
        self.dim = stored.shape[1]
        self._tiles = kernels.tiles()
        self.packed = aligned_empty(self._tiles.packed_size(len(rows), self.dim), np.uint16)
        residuals, lengths = np.empty(len(rows)), np.empty(len(rows))
        self._tiles.pack_columns(stored, rows, scales, self.packed, residuals, lengths)
        self.vector_residual = float(residuals.max(initial=0.0))
        self.vector_norm = float(lengths.max(initial=0.0)) * (1 + 2 * U32)

    tile_maxima = True
    uses_blas = False

    def similarities(self, q64: np.ndarray, out: np.ndarray,
                     maxima: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Writes the queries' similarities with every column to ``out`` and the largest of each tile of 16
        columns to ``maxima`` (queries x tiles, required); returns each query's error bound and an upper bound
        on its norm (from the sums of squares the packing takes).

        Queries with an element of ``TILE_RANGE`` or more get similarity 0 and an infinite bound: every
        column is then a candidate, and the float64 re-ranking alone decides.
        """
        if maxima is None:
            raise ValueError("the tile screen writes each tile's maxima: pass their buffer")
        q64 = np.ascontiguousarray(q64, dtype=np.float64)
        norms, residuals, norms64, largest = (np.empty(len(q64)) for _ in range(4))
        self._tiles.screen(q64, self.packed, out, norms, residuals, maxima, norms64, largest)
        if np.isnan(largest).any():
            raise PerceptError(NONFINITE_QUERIES)
        bounds = norms64 * (1 + (self.dim + 2) * U64)
        eps = absolute_error(self.dim, bounds, self.vector_norm)
        eps += tile_error(self.dim, norms, residuals, self.vector_norm, self.vector_residual)
        huge = largest >= TILE_RANGE
        if huge.any():
            out[huge] = maxima[huge] = 0.0
            eps[huge] = np.inf
        return eps, bounds


def stored_screen(stored: np.ndarray, rows: np.ndarray, scales: np.ndarray) -> Float32Screen | TileScreen:
    """The screen over columns ``stored[rows[j]] * scales[j]`` (float16 or float32 rows, float32 ``scales``):
    tiles where they can be used, else the float32 columns."""
    stored = np.ascontiguousarray(stored)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    scales = np.ascontiguousarray(scales, dtype=np.float32)
    screen = _tile_screen(stored, rows, scales)
    if screen is not None:
        return screen
    columns32 = np.empty((len(rows), stored.shape[1]), dtype=np.float32)
    kernels.gather_float32(stored, rows, columns32)
    columns32 *= scales[:, None]
    return Float32Screen(columns32)


def column_screen(columns32: np.ndarray) -> Float32Screen | TileScreen:
    """The screen over float32 columns (n, dim): tiles where they can be used."""
    columns32 = np.ascontiguousarray(columns32, dtype=np.float32)
    n = len(columns32)
    return _tile_screen(columns32, np.arange(n), np.ones(n, dtype=np.float32)) or Float32Screen(columns32)


def _tile_screen(stored: np.ndarray, rows: np.ndarray, scales: np.ndarray) -> TileScreen | None:
    """The tile screen of these columns, or None where tiles are off, there are no columns, or the columns'
    norms reach ``TILE_RANGE`` (NaN norms stay with the tiles, for the caller's check)."""
    if not _tiles_wanted or not kernels.tiles_available() or not len(rows):
        return None
    screen = TileScreen(stored, rows, scales)
    return None if screen.vector_norm >= TILE_RANGE else screen
