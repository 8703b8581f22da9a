"""The device's screen: every similarity of a block of queries from float16 (or bfloat16) products summed in
float32, each within a proven bound of the float64 similarity the CPU path computes.

The columns are the model's distinct float64 vectors x rounded to the screen's type (x'); the query rows y
are what the caller hands: stored float16 rows as they are (the float16 screen takes them without any
rounding), or float64 unit rows, rounded to the screen's type (y'). The device sums the exact products
y'_k x'_k in float32 and scales the sum by the float32 rounding of 1/D, D the row's float64 norm (1 for unit
rows). The float64 similarity s the CPU path gives is that of q = fl(y / D) with x, summed in float64.

**The bound.** With r_y = y - y', r_x = x - x' (both exact in float64), and |.| Euclidean norms:

1. y'·x' - y·x = -(y'·r_x) - (r_y·x), so |y'·x' - y·x| <= |y'| |r_x| + |r_y| |x| (Cauchy-Schwarz).
2. The float32 sum a of the products: |a - y'·x'| <= g(d) |y'| |x'| + 2 d 2^-126, with g(d) = d u / (1 - d u)
   for u = 2^-22. The products of float16 or bfloat16 values are exact in float32. Matrix units add blocks
   of products to the running sum at once, aligning them to the largest and cutting what falls below its
   24 bits (Fasi, Higham, Mikaitis and Pranesh, "Numerical behavior of NVIDIA tensor cores", PeerJ CS 2021):
   each such step loses less than 2^-23 of each term it adds, and a step adds at least two (the running sum
   and a product), so d terms lose at most d 2^-22 of their sum of magnitudes <= |y'| |x'|; a sum in IEEE
   float32 with one rounding per addition (the CPU device's, or float32 columns) loses less. Results below
   2^-126 may be flushed to zero: 2^-126 per addition, twice for the alignment.
3. The scaling: v = a c (1 + d3), c = (1/D)(1 + d1)(1 + d2) (float64 reciprocal, float32 rounding), so
   |v - a / D| <= |a| theta / D with theta = (1 + 2^-53)(1 + 2^-24)^2 - 1, plus 2^-149 for underflow.
4. q_k = (y_k / D)(1 + e_k) with |e_k| <= 2^-53: |q·x - y·x / D| <= 2^-53 |y| |x| / D.
5. The CPU's float64 sum of q_k x_k lies within g64(d + 4) |q| |x| of q·x (Higham §3.1), |q| <= |y| / D (1 + 2^-53).

Together, per query, with |y'| <= |y| + |r_y| and the largest |x'|, |r_x|, |x| over the columns:

    eps = (|y| |x| (theta + 2^-53 + g64(d + 4)(1 + 2^-53)) + (1 + theta) (g(d) |y'| |x'| + |y'| |r_x|
           + |r_y| |x| + 2 d 2^-126)) / D + 2^-148,

and s lies within eps of v (the norms are taken in float64 and enlarged by 2^-30 for their rounding, eps by
2^-40 for its own; the tests check the bound value by value on data made to strain it). A query with an
element too large for the screen's type gets value 0 and an infinite bound (the float64 re-ranking alone
decides). The search (:mod:`percept.model.torch_scoring`) cuts with it exactly as the CPU path does
(:mod:`percept.model.exact_search`): a vector screened below the K-th largest value minus 2 eps is, in
float64, less similar than K others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from percept.errors import PerceptError
from percept.model.screens import NORM_SLACK, TINY, U32, U64, gamma
from percept.model.shared_settings import IEEE_FLOAT32, SharedSetting

#: Relative loss per term of each accumulation step of the device's float32 sums (see the module docstring).
U_ACCUMULATE = 2.0 ** -22
#: Smallest positive float32 subnormal: the float32 scaling of a value may underflow by half of it.
SUBNORMAL32 = 2.0 ** -149


@dataclass(frozen=True)
class Precision:
    """A screen's number type: its name, torch dtype, and the element size it holds (exclusive)."""

    name: str
    dtype: torch.dtype
    limit: float


#: The screens by ``--precision`` name; ``fp16`` is the default (twice bfloat16's bits, fast on every GPU).
PRECISIONS = {
    "fp16": Precision("fp16", torch.float16, 2.0 ** 15),
    "bf16": Precision("bf16", torch.bfloat16, 2.0 ** 127),
    "fp32": Precision("fp32", torch.float32, 2.0 ** 127),
}
DEFAULT_PRECISION = "fp16"


def check_precision(name: str) -> str:
    """``name`` if it names a screen precision, else a one-line error listing them."""
    if name not in PRECISIONS:
        raise PerceptError(f"--precision must be one of {', '.join(PRECISIONS)} for scoring, got {name!r}")
    return name


def _full_half_reductions() -> Callable[[], None]:
    """cuBLAS float16/bfloat16 products with every reduction in float32; returns what restores the settings."""
    matmul = torch.backends.cuda.matmul
    names = [name for name in ("allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction")
             if isinstance(getattr(matmul, name, None), bool)]
    saved = [(name, getattr(matmul, name)) for name in names]
    for name in names:
        setattr(matmul, name, False)

    def restore() -> None:
        for name, before in saved:
            setattr(matmul, name, before)

    return restore


#: Half-precision products reduced in float32 only, while the screen runs on a GPU.
FULL_HALF_REDUCTIONS = SharedSetting(_full_half_reductions, "half-reductions")


def _largest_norm(rows: Tensor, chunk: int = 4096) -> float:
    """The largest float64 norm of the rows, a chunk at a time (bounded memory)."""
    return max((float(torch.linalg.vector_norm(rows[s:s + chunk].double(), dim=1).max())
                for s in range(0, len(rows), chunk)), default=0.0)


class Screened(NamedTuple):
    """A block's screen: the float32 sums a (queries x columns), each row's float32 scale c (None: 1) and
    bound eps (float64). A column's screen value is the float32 product ``a * c``, within eps of the float64
    similarity; scaling keeps each row's order, so a search scales only the values it keeps."""

    sums: Tensor
    scales: Tensor | None
    eps: Tensor

    def values(self, sums: Tensor, rows: Tensor | slice = slice(None)) -> Tensor:
        """Screen values of ``sums`` (some columns of the rows at ``rows``), as float64."""
        scaled = sums if self.scales is None else sums * self.scales[rows][:, None]
        return scaled.double()


class DeviceScreen:
    """The screen over float64 columns (distinct vectors, on the device) in ``precision``."""

    def __init__(self, columns64: Tensor, precision: str = DEFAULT_PRECISION):
        self.precision = PRECISIONS[check_precision(precision)]
        self.dim = int(columns64.shape[1])
        self.device = columns64.device
        exact_norm = _largest_norm(columns64)
        if not torch.isfinite(columns64).all():
            raise PerceptError("the training vectors contain NaN or infinite values: re-encode the images")
        if exact_norm >= self.precision.limit:
            self.precision = PRECISIONS["fp32"]  # columns too long for the type: the float32 screen holds them
        self.columns = columns64.to(self.precision.dtype)
        residual = max((_largest_norm(columns64[s:s + 4096] - self.columns[s:s + 4096].double())
                        for s in range(0, len(columns64), 4096)), default=0.0)
        self.exact_norm = exact_norm * NORM_SLACK
        self.vector_norm = _largest_norm(self.columns) * NORM_SLACK
        self.vector_residual = residual * NORM_SLACK
        # on other devices than CUDA, the half-precision values are multiplied as their exact float32 widening
        self._widened = self.columns.float() if self.device.type != "cuda" else None

    @property
    def dtype(self) -> torch.dtype:
        return self.precision.dtype

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The process-wide product settings the bound assumes, while screens run (restored after)."""
        with IEEE_FLOAT32.held(), (FULL_HALF_REDUCTIONS.held() if self.device.type == "cuda"
                                   else contextlib.nullcontext()):
            yield

    def similarities(self, rows: Tensor, divisors: Tensor | None = None) -> Screened:
        """The screen of ``rows / divisors`` with every column, and each query's bound.

        ``rows``: stored rows in the screen's own type (taken as they are) or in any float type (rounded to it);
        ``divisors``: each stored row's float64 norm (1 for zero rows), or None for unit rows (D = 1). Call
        inside :meth:`held`.
        """
        norms = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64) * NORM_SLACK
        huge = None
        if rows.dtype == self.dtype:
            rounded, residuals = rows, torch.zeros_like(norms)
        else:
            rounded = rows.to(self.dtype)
            residuals = torch.linalg.vector_norm(rows.double() - rounded.double(), dim=1) * NORM_SLACK
            huge = rows.abs().amax(dim=1) >= self.precision.limit if rows.shape[1] else None
        sums = self.products(rounded)
        scales = None if divisors is None else (1.0 / divisors).to(torch.float32)
        eps = self.error(norms, residuals, torch.ones_like(norms) if divisors is None else divisors)
        if huge is not None:
            sums.masked_fill_(huge[:, None], 0.0)
            eps = torch.where(huge, torch.inf, eps)
        return Screened(sums, scales, eps)

    def products(self, rounded: Tensor) -> Tensor:
        """Float32 products of rows in the screen's type with every column (inside :meth:`held`)."""
        if self._widened is None:
            if self.dtype == torch.float32:
                return rounded @ self.columns.T
            return torch.mm(rounded, self.columns.T, out_dtype=torch.float32)
        return rounded.float() @ self._widened.T

    def error(self, norms: Tensor, residuals: Tensor, divisors: Tensor) -> Tensor:
        """Each query's bound (the module docstring's eps) from |y|, |r_y| and D."""
        d = self.dim
        theta = (1 + U64) * (1 + U32) ** 2 - 1
        rounded = norms + residuals
        scaling = norms * self.exact_norm * (theta + U64 + gamma(d + 4, U64) * (1 + U64))
        products = (gamma(d, U_ACCUMULATE) * rounded * self.vector_norm + rounded * self.vector_residual
                    + residuals * self.exact_norm + 2 * d * TINY)
        return ((scaling + (1 + theta) * products) / divisors + 2 * SUBNORMAL32) * (1 + 2.0 ** -40)
