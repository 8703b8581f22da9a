"""A model file's vectors held a second time as quotient rows: written where the vectors are unit rows of float16
embeddings, divided back on load instead of inflating the float64 members, and ignored wherever they do not give
those members' very bytes."""

from __future__ import annotations

import numpy as np
import pytest
from test_kernels import running

from percept.categories import CATEGORIES
from percept.model import io as model_io
from percept.model.io import ModelSettings, load_model, save_model
from percept.model.knn import l2_normalise
from percept.model.npz import array_names, same_bytes
from percept.model.quotient_members import DIVISORS_KEY, NUMERATORS_KEY, ROWS_PREFIX
from percept.model.unit_rows import UnitRows


@pytest.fixture
def quotient_model(tmp_path, c_kernels):
    """A model of unit rows normalised from float16 embeddings (shared by the categories, some repeated)."""
    rng = np.random.default_rng(0)
    pool = np.asarray(UnitRows(rng.normal(size=(80, 40)).astype(np.float16)))
    vectors = {c: pool[rng.integers(0, 80, 50 + 5 * i)] for i, c in enumerate(CATEGORIES)}
    path = tmp_path / "model.npz"
    save_model(path, vectors, {c: rng.uniform(1, 5, len(v)) for c, v in vectors.items()},
               ModelSettings(clip_model="percept:tiny", k=5))
    return path, vectors


def read_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every read_npz call the loader makes."""
    calls = []
    original = model_io.read_npz

    def spy(path, **kwargs):
        calls.append(kwargs)
        return original(path, **kwargs)

    monkeypatch.setattr(model_io, "read_npz", spy)
    return calls


def same_vectors(got: dict, want: dict) -> None:
    for category in CATEGORIES:
        assert got[category].dtype == np.float64
        assert got[category].tobytes() == np.asarray(want[category], dtype=np.float64).tobytes()


def test_models_of_float16_unit_rows_load_from_their_quotient_rows(quotient_model, monkeypatch):
    path, vectors = quotient_model
    names = array_names(path)
    assert {NUMERATORS_KEY, DIVISORS_KEY} | {ROWS_PREFIX + c for c in CATEGORIES} <= names
    calls = read_calls(monkeypatch)
    same_vectors(load_model(path).vectors, vectors)
    assert len(calls) == 1 and set(calls[0]["skip"]) == {f"{c}_vecs" for c in CATEGORIES}  # no vecs inflated
    with running("pure"):  # divided back by numpy where the C kernels are not in use: the same bits
        same_vectors(load_model(path).vectors, vectors)


def test_a_copy_that_no_longer_matches_is_ignored(quotient_model, monkeypatch):
    """A member rewritten after the copy was made (other vectors, or damaged quotient members) is read itself."""
    path, vectors = quotient_model
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    changed = dict(vectors, greenness=l2_normalise(np.random.default_rng(5).normal(size=vectors["greenness"].shape)))
    arrays["greenness_vecs"] = changed["greenness"]
    arrays[ROWS_PREFIX + "safety"] = arrays[ROWS_PREFIX + "safety"] + 10_000  # rows out of range
    np.savez(path, **arrays)  # stored, not deflated
    calls = read_calls(monkeypatch)
    same_vectors(load_model(path).vectors, changed)
    assert set(calls[1]["only"]) == {"greenness_vecs", "safety_vecs", "walkability_vecs", "bikeability_vecs",
                                     "pleasantness_vecs"}  # the safety rows spoil every category's copy


def test_a_vector_that_is_off_by_one_ulp_is_read_from_its_member(quotient_model, monkeypatch):
    path, vectors = quotient_model
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    nudged = arrays["bikeability_vecs"].copy()
    nudged[3, 7] = np.nextafter(nudged[3, 7], 1.0)
    arrays["bikeability_vecs"] = nudged
    np.savez_compressed(path, **arrays)
    calls = read_calls(monkeypatch)
    same_vectors(load_model(path).vectors, dict(vectors, bikeability=nudged))
    assert set(calls[1]["only"]) == {"bikeability_vecs"}


def test_vectors_that_are_not_quotient_rows_get_no_copy(tmp_path, c_kernels):
    rng = np.random.default_rng(1)
    vectors = {c: l2_normalise(rng.normal(size=(30, 16))) for c in CATEGORIES}
    path = tmp_path / "model.npz"
    save_model(path, vectors, {c: rng.uniform(1, 5, 30) for c in CATEGORIES}, None)
    assert not array_names(path) & {NUMERATORS_KEY, DIVISORS_KEY}
    same_vectors(load_model(path).vectors, vectors)


@pytest.mark.parametrize("save", [np.savez_compressed, np.savez], ids=["deflated", "stored"])
def test_same_bytes_compares_an_array_with_a_member(tmp_path, save):
    rng = np.random.default_rng(2)
    array = rng.normal(size=(40, 9))
    path = tmp_path / "arrays.npz"
    save(path, a=array, b=np.asfortranarray(array), c=array.astype(np.float32), e=np.empty((0, 9)))
    assert same_bytes(path, "a", array)
    assert not same_bytes(path, "a", array[:-1])  # another shape
    assert not same_bytes(path, "a", array.astype(np.float32))  # another type
    changed = array.copy()
    changed[5, 5] = np.nextafter(changed[5, 5], 2.0)
    assert not same_bytes(path, "a", changed)  # one ulp: another CRC-32
    assert not same_bytes(path, "b", array)  # stored in Fortran order
    assert same_bytes(path, "c", array.astype(np.float32))
    assert same_bytes(path, "e", np.empty((0, 9))) and not same_bytes(path, "e", np.empty((0, 8)))
    assert not same_bytes(path, "missing", array)


def test_the_scorer_lays_out_its_search_from_the_files_quotient_rows(quotient_model, monkeypatch):
    """A model read with its quotient rows keeps them, and its scorer takes its distinct rows and their quotients
    from them (neither is looked for again) and searches without making their float64 rows: the same neighbours,
    bit for bit, as a scorer of the bare vectors, on the compiled and the pure path."""
    from percept.model import exact_search, scoring
    from percept.model.io import ExportedModel
    from percept.model.scoring import MultiScorer

    path, vectors = quotient_model
    model = load_model(path)
    assert model.quotients is not None
    bare = MultiScorer(ExportedModel(model.vectors, model.scores, model.settings))
    monkeypatch.setattr(scoring, "distinct_rows", lambda arrays: pytest.fail("distinct rows looked for again"))
    monkeypatch.setattr(exact_search, "quotient_rows", lambda *args: pytest.fail("quotient rows looked for again"))
    scorer = MultiScorer(model)
    assert scorer.space.row_divisors is not None
    queries = l2_normalise(np.random.default_rng(3).normal(size=(25, 40)))
    got, want = scorer.neighbours(queries), bare.neighbours(queries)
    assert "vectors64" not in vars(scorer)  # the float64 rows were never made
    with running("pure"):
        pure = MultiScorer(model).neighbours(queries)
    for found in (got, pure):
        for category in CATEGORIES:
            np.testing.assert_array_equal(found[category].index, want[category].index)
            assert found[category].similarity.tobytes() == want[category].similarity.tobytes()
    assert (scorer.dim, scorer.n_vectors) == (bare.dim, bare.n_vectors)
    assert scorer.vectors64.tobytes() == bare.vectors64.tobytes()  # made when asked for: the same rows


def test_a_model_keeps_no_quotient_rows_that_do_not_match(quotient_model):
    path, _ = quotient_model
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["safety_vecs"] = arrays["safety_vecs"][::-1].copy()
    np.savez(path, **arrays)
    assert load_model(path).quotients is None
