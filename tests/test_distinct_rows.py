"""Distinct rows over the categories of a model, against grouping the rows by their bytes in plain Python:
the same distinct rows in the same order, and the same position for every row, whichever way they were found."""

from __future__ import annotations

import numpy as np
import pytest

from percept.model import distinct
from percept.model.distinct import KEY_COLUMNS, distinct_rows


def by_bytes(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct rows in order of first appearance, and each array's row → distinct position, from a dict of bytes."""
    seen: dict[bytes, int] = {}
    kept, positions = [], []
    for array in arrays:
        where = []
        for row in np.asarray(array, dtype=np.float64):
            if row.tobytes() not in seen:
                seen[row.tobytes()] = len(kept)
                kept.append(row)
            where.append(seen[row.tobytes()])
        positions.append(np.array(where, dtype=np.int64))
    dim = arrays[0].shape[1] if arrays else 0
    return (np.array(kept) if kept else np.empty((0, dim))), positions


def assert_as_by_bytes(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    got_rows, got_positions = distinct_rows(arrays)
    want_rows, want_positions = by_bytes(arrays)
    assert got_rows.dtype == np.float64 and got_rows.tobytes() == want_rows.tobytes()
    assert got_rows.shape == want_rows.shape
    assert len(got_positions) == len(want_positions)
    for got, want in zip(got_positions, want_positions):
        assert got.tolist() == want.tolist()
    return got_rows, got_positions


def test_categories_sharing_vectors_in_other_orders():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 64))
    arrays = [vectors[rng.choice(300, size=200 + 10 * i, replace=i % 2 == 0)] for i in range(5)]
    rows, _ = assert_as_by_bytes(arrays)
    assert len(rows) < sum(len(a) for a in arrays)


def test_rows_alike_in_the_key_columns_are_told_apart():
    """Rows equal in every column the first grouping hashes, but not in another, are still distinct."""
    rng = np.random.default_rng(1)
    dim = 100
    keyed = np.unique(np.linspace(0, dim - 1, KEY_COLUMNS).astype(int))
    other = np.setdiff1d(np.arange(dim), keyed)
    base = rng.normal(size=(40, dim))
    twins = base.copy()
    twins[:, other[5]] += 1.0  # a column the first grouping does not hash
    rows, positions = assert_as_by_bytes([base, twins, base[::-1], twins[:5]])
    assert len(rows) == 80


def test_rows_differing_only_in_the_sign_of_a_zero_are_distinct():
    rows = np.zeros((2, 40))
    rows[:, 0] = 1.0
    rows[1, 17] = -0.0  # equal in value, not in bits: two vectors, as a hash of the bytes has always made them
    found, positions = assert_as_by_bytes([rows, rows[::-1]])
    assert len(found) == 2 and positions[1].tolist() == [1, 0]


def test_a_collision_of_whole_row_hashes_falls_back_to_the_bytes(monkeypatch):
    """Should even the hash of the whole rows collide, the rows are grouped by their bytes."""
    monkeypatch.setattr(distinct, "row_keys", lambda rows: np.zeros(len(rows), dtype=np.uint64))
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(30, 24))
    assert_as_by_bytes([vectors, vectors[[3, 3, 29, 0]], rng.normal(size=(4, 24))])


@pytest.mark.parametrize("shapes", [[(0, 8)], [(0, 8), (3, 8)], [(5, 3)], [(1, 1), (2, 1)], [(4, 2000)]])
def test_small_empty_and_wide_arrays(shapes):
    rng = np.random.default_rng(3)
    arrays = [rng.integers(-2, 3, size=shape).astype(np.float64) for shape in shapes]  # repeats likely
    assert_as_by_bytes(arrays)


def test_no_arrays():
    rows, positions = distinct_rows([])
    assert rows.shape == (0, 0) and positions == []


def test_float32_rows_are_read_as_float64():
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(20, 10)).astype(np.float32)
    assert_as_by_bytes([vectors, vectors[::2]])
