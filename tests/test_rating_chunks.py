"""The chunks rating reads and the tables it writes: which rows have a direction, told from their norms, agrees
with reading the rows; chunks that know it are scored as those that do not; a chunk's table has the columns, types
and values of building it column by column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from percept.categories import CATEGORIES
from percept.city.rating import Chunk, directions, estimate_chunk, rated_table
from percept.model.estimates import Estimates, Estimator
from percept.model.io import ExportedModel, ModelSettings
from percept.model.knn import l2_normalise
from percept.model.unit_rows import UnitRows


def read_directions(raw: np.ndarray, zeroed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit rows as rating makes them (rows ``zeroed`` set to zero), and which of them ``any`` finds nonzero."""
    vectors = l2_normalise(raw)
    vectors[zeroed] = 0.0
    return vectors, vectors.any(axis=1)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_directions_from_norms_agree_with_reading_the_rows(dtype):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(40, 64)).astype(dtype)
    raw[1] = 0.0
    raw[2] = -0.0
    raw[3, :] = 0.0
    raw[3, 9] = np.finfo(dtype).smallest_subnormal
    zeroed = np.array([5, 1, 30])
    unit = UnitRows(raw)
    vectors = np.asarray(unit)
    vectors[zeroed] = 0.0
    want_vectors, want = read_directions(raw, zeroed)
    assert vectors.tobytes() == want_vectors.tobytes()
    assert directions(vectors, unit.norms, zeroed).tolist() == want.tolist()


def test_directions_of_rows_whose_squares_underflow_or_overflow():
    """Float64 rows so small that their squares vanish (norm 0, yet a direction), or so large that their norm is
    infinite (every element over it is 0): the rows themselves decide."""
    raw = np.full((4, 16), 1.0)
    raw[0] = 1e-170
    raw[1] = 1e200
    raw[2, :] = 0.0
    raw[2, 3] = -1e-200
    unit = UnitRows(raw)
    vectors = np.asarray(unit)
    _, want = read_directions(raw, np.array([], dtype=np.int64))
    assert want.tolist() == [True, False, True, True]
    assert directions(vectors, unit.norms, np.array([], dtype=np.int64)).tolist() == want.tolist()


def model(rng, n=120, dim=16) -> ExportedModel:
    vectors = l2_normalise(rng.normal(size=(n, dim)))
    return ExportedModel({c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, n) for c in CATEGORIES},
                         ModelSettings(k=5), images={c: [f"s{i}.jpg" for i in range(n)] for c in CATEGORIES})


def same_estimates(got: Estimates, want: Estimates) -> None:
    for name in ("scores", "sd", "best_similarity", "out_of_domain", "in_survey", "lo", "hi", "dissimilarity"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_a_chunk_that_knows_its_directions_is_scored_as_one_that_does_not():
    rng = np.random.default_rng(1)
    estimator = Estimator(model(rng))
    raw = rng.normal(size=(30, 16)).astype(np.float16)
    raw[[4, 17]] = 0
    unit = UnitRows(raw)
    vectors = np.asarray(unit)
    names = [f"q{i}.jpg" for i in range(28)] + ["s3.jpg", "s7.jpg"]  # two survey images, left out of their own
    usable = directions(vectors, unit.norms, np.array([4, 17]))
    plain = Chunk(names, np.ones(30, dtype=np.int64), names, vectors)
    told = Chunk(names, np.ones(30, dtype=np.int64), names, vectors, usable)
    same_estimates(estimate_chunk(estimator, told, False), estimate_chunk(estimator, plain, False))
    assert np.isnan(estimate_chunk(estimator, told, False).scores[[4, 17]]).all()


@pytest.mark.parametrize("level", [None, 0.9])
@pytest.mark.parametrize("panoramic", [False, True])
@pytest.mark.parametrize("rows", [0, 1, 9])
def test_a_chunk_table_is_the_one_built_column_by_column(level, panoramic, rows):
    rng = np.random.default_rng(2)
    categories = ["walkability", "safety"]
    names = [f"a/q{i}.jpg" for i in range(rows)]
    chunk = Chunk(names, np.arange(1, rows + 1), names, np.zeros((rows, 3)))
    estimates = Estimates(rng.random((rows, 2)), rng.random((rows, 2)), rng.random(rows), rng.random(rows) < 0.5,
                          rng.random(rows) < 0.5, rng.random((rows, 2)), rng.random((rows, 2)), rng.random(rows), level)
    want = pd.DataFrame({"image": names})
    if panoramic:
        want["crops"] = chunk.crops
    for column, category in enumerate(categories):
        want[category] = estimates.scores[:, column]
    for column, category in enumerate(categories):
        want[f"{category}_sd"] = estimates.sd[:, column]
    if level is not None:
        for column, category in enumerate(categories):
            want[f"{category}_lo"] = estimates.lo[:, column]
            want[f"{category}_hi"] = estimates.hi[:, column]
    for name in ("best_similarity", "dissimilarity", "out_of_domain", "in_survey"):
        want[name] = getattr(estimates, name)
    got, unlocated = rated_table(chunk, categories, estimates, panoramic, None)
    assert unlocated == 0
    assert list(got.columns) == list(want.columns) and list(got.dtypes) == list(want.dtypes)
    assert got.equals(want)
