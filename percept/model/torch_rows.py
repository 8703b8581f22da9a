"""Float64 sums on a torch device in the compiled kernels' fixed order, so that they have the CPU's bits.

The CPU path sums every float64 dot product (and every sum of squares) over ``LANES`` partial sums, term k
going to partial sum k mod ``LANES``, the partial sums added pairwise at the end, each product rounded before it
is added (:func:`percept.model.pure_search.fixed_order_sums`). The same additions in the same order give the
same bits on any IEEE device: torch's elementwise products and sums round each operation once (no fused
multiply-add across two kernels), and its float64 division and, on CUDA, square root are correctly rounded
(torch's CPU square root is not always: on the CPU, numpy's takes it).

:func:`unit_rows` normalises stored query rows as :func:`percept.model.knn.l2_normalise` does (float64 sum
of squares in the fixed order, square root, division; zero rows stay zero), bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from percept.model.pure_search import LANES


def fixed_order_products(left: Tensor, right: Tensor) -> Tensor:
    """Sums over the last axis of ``left * right`` (float64, broadcast), in the compiled kernels' order.

    Each step adds ``LANES`` rounded products to the partial sums (no product is kept past its step),
    then the partial sums are added pairwise, then the terms after the last whole step one at a time.
    """
    dim = left.shape[-1]
    whole = dim - dim % LANES
    shape = torch.broadcast_shapes(left.shape[:-1], right.shape[:-1])
    lanes = torch.zeros((*shape, LANES), dtype=torch.float64, device=left.device)
    for start in range(0, whole, LANES):
        lanes += left[..., start:start + LANES] * right[..., start:start + LANES]
    width = LANES // 2
    while width:
        lanes[..., :width] += lanes[..., width:2 * width]
        width //= 2
    total = lanes[..., 0].clone()
    for k in range(whole, dim):
        total += left[..., k] * right[..., k]
    return total


def row_norms(rows: Tensor) -> Tensor:
    """Float64 norm of each row (any float type, widened exactly), as :func:`percept.model.unit_rows.row_norms`."""
    wide = rows.to(torch.float64)
    sums = fixed_order_products(wide, wide)
    if sums.device.type == "cpu":
        return torch.from_numpy(np.sqrt(sums.numpy()))
    return torch.sqrt(sums)


class Normalised(NamedTuple):
    """Stored rows made unit rows: the float64 unit rows, each row's norm, and what it was divided by."""

    unit: Tensor
    norms: Tensor
    divisors: Tensor  # the norm, or 1 for zero rows (which stay zero)


def unit_rows(rows: Tensor) -> Normalised:
    """Float64 unit rows of stored ``rows``, as :func:`percept.model.knn.l2_normalise` gives them (bit for bit)."""
    norms = row_norms(rows)
    divisors = torch.where(norms == 0, torch.ones_like(norms), norms)
    return Normalised(rows.to(torch.float64) / divisors[:, None], norms, divisors)
