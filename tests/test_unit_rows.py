"""Unit rows read from stored rows: bit for bit the stored values, converted to float64, over their float64 norm,
in the compiled kernels and on the pure path, however the rows are selected."""

from __future__ import annotations

import numpy as np
import pytest
from test_kernels import implementations, running

from percept.model import kernels
from percept.model.knn import l2_normalise
from percept.model.unit_rows import UnitRows, row_norms, row_span


@pytest.fixture(params=implementations())
def path(request):
    """Each implementation this machine runs: pure, and every compiled build (float16 rows are made unit in one
    C pass there)."""
    with running(request.param):
        yield request.param


def stored_rows(dtype, rows: int = 600, dim: int = 300) -> np.ndarray:
    rng = np.random.default_rng(7)
    scale = 1000 if np.dtype(dtype).kind in "iu" else 1
    raw = (rng.normal(size=(rows, dim)) * scale).astype(dtype)
    raw[3] = 0
    if np.dtype(dtype).kind == "f":
        raw[4] = -0.0  # a zero row of negative zeros stays as it is
        raw[5, :] = 0
        raw[5, 7] = np.finfo(dtype).smallest_subnormal  # one tiny element: a direction of its own
    return raw


def reference(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float64 rows divided by their norms (zero rows by 1), computed on a float64 copy of the whole array."""
    wide = raw.astype(np.float64)
    norms = row_norms(wide)
    return wide / np.where(norms == 0, 1.0, norms)[:, None], norms


def same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int16])
def test_unit_rows_are_the_float64_rows_over_their_norms(path, dtype):
    raw = stored_rows(dtype)
    want, norms = reference(raw)
    unit = UnitRows(raw)
    same_bits(np.asarray(unit), want)
    same_bits(unit.norms, norms)  # kept from the conversion, as summed from the float64 rows
    same_bits(l2_normalise(raw), want)
    same_bits(l2_normalise(raw, np.float32), want.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_kind_of_selection_gives_the_same_rows(path, dtype):
    raw = stored_rows(dtype)
    want, _ = reference(raw)
    unit = UnitRows(raw)
    picks = np.random.default_rng(1).integers(0, len(raw), (7, 3))
    same_bits(unit[picks], want[picks])  # a 2-D array of positions, repeats included
    same_bits(unit[5], want[5])
    same_bits(unit[np.int64(4)], want[4])
    same_bits(unit[10:300:7], want[10:300:7])
    mask = np.random.default_rng(2).random(len(raw)) < 0.3
    same_bits(unit[mask], want[mask])
    same_bits(unit[[9, 2, 9], 5:40], want[[9, 2, 9], 5:40])
    same_bits(unit[np.array([], dtype=np.int64)], want[:0])
    same_bits(unit.float32(picks[0]), want[picks[0]].astype(np.float32))


def test_a_span_reads_the_same_rows_and_shares_their_norms(path):
    raw = stored_rows(np.float16)
    want, norms = reference(raw)
    unit = UnitRows(raw)
    span = unit.span(40, 90)
    assert span.shape == (50, raw.shape[1]) and np.shares_memory(span.raw, raw)
    same_bits(np.asarray(span), want[40:90])
    same_bits(unit.norms_of(np.arange(40, 90)), norms[40:90])  # worked out once, through the span
    assert np.isnan(unit._norms[:40]).all()  # the rows outside it were not read
    same_bits(row_span(unit, 3, 7)[[0, 3]], want[[3, 6]])
    same_bits(row_span(want, 3, 7), want[3:7])


def test_norms_given_are_used_and_missing_ones_are_kept(path):
    raw = stored_rows(np.float16)
    want, norms = reference(raw)
    unit = UnitRows(raw)
    same_bits(unit[[8, 1]], want[[8, 1]])
    same_bits(unit.norms_of(np.array([1, 8])), norms[[1, 8]])
    doubled = UnitRows(raw, norms * 2)  # recorded norms are divided by as they are
    same_bits(doubled[[1, 3]], raw[[1, 3]].astype(np.float64) / np.where(norms[[1, 3]] == 0, 1.0,
                                                                           norms[[1, 3]] * 2)[:, None])


def test_the_unit_rows_kernel_refuses_arguments_that_do_not_fit(path):
    raw = stored_rows(np.float16, rows=10, dim=8)
    rows = np.array([0, 9], dtype=np.int64)
    with pytest.raises(IndexError):
        kernels.unit_rows(raw, np.array([0, 10]), np.full(2, np.nan), np.empty((2, 8)))
    if path != "pure":  # the C checks shapes before it writes
        with pytest.raises(ValueError):
            kernels.unit_rows(raw, rows, np.full(3, np.nan), np.empty((2, 8)))
        with pytest.raises(ValueError):
            kernels.unit_rows(raw, rows, np.full(2, np.nan), np.empty((2, 7)))
