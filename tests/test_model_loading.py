"""Loading a model file: its arrays read on several threads, its categories' vectors checked on several threads, a
cache-sized piece at a time, and the first problem in category order reported, as one category after another would
find it."""

from __future__ import annotations

import re

import numpy as np
import pytest

from percept.categories import CATEGORIES
from percept.data import vector_checks
from percept.data.vector_checks import check_rows
from percept.errors import PerceptError
from percept.model import npz
from percept.model.io import load_model
from percept.model.npz import read_npz


def arrays(rng, n=30, dim=8) -> dict[str, np.ndarray]:
    found = {}
    for category in CATEGORIES:
        found[f"{category}_vecs"] = rng.normal(size=(n, dim))
        found[f"{category}_scores"] = rng.uniform(1, 5, n)
    return found


@pytest.mark.parametrize("save", [np.savez_compressed, np.savez], ids=["deflated", "stored"])
def test_more_members_than_threads_and_arrays_that_outlive_the_file(tmp_path, save):
    """Every member comes back, however many; the arrays hold their own bytes, not the file's."""
    rng = np.random.default_rng(0)
    want = {f"a{i}": rng.normal(size=(rng.integers(0, 50), 7)) for i in range(3 * npz.LOAD_THREADS)}
    path = tmp_path / "many.npz"
    save(path, **want)
    got = read_npz(path)
    path.write_bytes(b"\0" * path.stat().st_size)  # the file overwritten in place
    path.unlink()
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        np.testing.assert_array_equal(got[name], array)


@pytest.mark.parametrize("damage, fragment", [
    ({"safety_vecs": (4, "nan"), "walkability_vecs": (9, "zero")}, "walkability_vecs row 9 is a zero vector"),
    ({"bikeability_vecs": (2, "zero"), "greenness_vecs": (1, "nan")}, "bikeability_vecs row 2 is a zero vector"),
    ({"walkability_vecs": (3, "nan"), "pleasantness_vecs": (0, "text")}, "walkability_vecs row 3 holds NaN"),
    ({"walkability_vecs": (0, "text"), "safety_vecs": (3, "nan")}, "walkability_vecs holds a <U"),
])
def test_the_first_damaged_category_is_named(tmp_path, damage, fragment):
    rng = np.random.default_rng(1)
    found = arrays(rng)
    for key, (row, kind) in damage.items():
        if kind == "text":
            found[key] = found[key].astype(str)
        else:
            found[key][row] = np.nan if kind == "nan" else 0.0
    path = tmp_path / "model.npz"
    np.savez_compressed(path, **found)
    with pytest.raises(PerceptError, match=re.escape(fragment)) as raised:
        load_model(path)
    assert "re-export the model" in str(raised.value)


def test_a_whole_model_loads_as_written(tmp_path):
    rng = np.random.default_rng(2)
    found = arrays(rng)
    path = tmp_path / "model.npz"
    np.savez_compressed(path, **found)
    model = load_model(path)
    for category in CATEGORIES:
        np.testing.assert_array_equal(model.vectors[category], found[f"{category}_vecs"])
        np.testing.assert_array_equal(model.scores[category], found[f"{category}_scores"])


@pytest.mark.parametrize("rows_at_once", [1, 2, 7])
def test_vectors_checked_in_pieces_of_a_few_bytes_find_the_same_rows(monkeypatch, rows_at_once):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 6))
    vectors[[0, 13, 39]] = 0.0
    vectors[[6, 7, 20], [1, 5, 0]] = [np.nan, np.inf, -np.inf]
    whole = check_rows(vectors)
    assert whole.nonfinite.tolist() == [6, 7, 20] and whole.zero.tolist() == [0, 13, 39]
    monkeypatch.setattr(vector_checks, "CHUNK_BYTES", rows_at_once * vectors.shape[1] * vectors.itemsize)
    pieces = check_rows(vectors)
    assert pieces.nonfinite.tolist() == whole.nonfinite.tolist() and pieces.zero.tolist() == whole.zero.tolist()
