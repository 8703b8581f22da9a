"""Estimates on a torch device equal the CPU's: the same neighbours, scores, sd, intervals, best similarity,
dissimilarity and domain flags within 1e-9 (torch on the CPU here; CUDA where a GPU is present).

The models are survey-sized and made to be hard: five categories rating different subsets, one to three
samples per image, integer scores (ties), the same vector under two image names, K from 1 up to a whole
category, survey images scored with and without their own samples, calibrated intervals in four of the five
categories. Stored float16 rows are normalised on the device as the CPU normalises them, zero rows get empty
estimates as rating gives them, and chunks streamed through the device come back in order, each equal to its
own estimates."""

from __future__ import annotations

import numpy as np
import pytest

from percept.categories import CATEGORIES
from percept.city.rating import Chunk, estimate_chunk
from percept.errors import PerceptError
from percept.model import leave_one_out, weighting
from percept.model.conformal import Calibration
from percept.model.devices import make_estimator
from percept.model.estimates import Estimator, neighbour_statistics
from percept.model.io import ExportedModel, ModelSettings
from percept.model.knn import Neighbours, l2_normalise
from percept.model.scoring import MultiScorer

torch = pytest.importorskip("torch")

from percept.model import torch_statistics  # noqa: E402
from percept.model.torch_estimates import DeviceEstimator  # noqa: E402

FIELDS = ("scores", "sd", "lo", "hi", "best_similarity", "dissimilarity")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _device(name):
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return name


def hard_model(rng, n=1500, dim=96, k=10, weighting="softmax10**"):
    """A calibrated survey of ``n`` named images: see the module docstring. Returns the model, each image's
    vector and the image names."""
    vectors = l2_normalise(rng.normal(size=(n, dim)) + 0.6 * l2_normalise(rng.normal(size=(1, dim))))
    vectors[n - 40:] = vectors[:40]  # the same picture under two names
    names = np.array([f"img_{i:05d}.jpg" for i in range(n)])
    rows = {}
    for number, category in enumerate(CATEGORIES):
        kept = np.flatnonzero(rng.random(n) > 0.1 * number)
        rows[category] = np.repeat(kept, rng.integers(1, 4, len(kept)))
    calibration = {c: Calibration(np.sort(rng.exponential(1.0, 300)), float(rng.uniform(0.1, 1.0)))
                   for c in CATEGORIES[:4]}
    model = ExportedModel({c: vectors[r] for c, r in rows.items()},
                          {c: rng.integers(1, 6, len(r)).astype(float) for c, r in rows.items()},
                          ModelSettings(clip_model="x", k=k, weighting=weighting),
                          {c: names[r].tolist() for c, r in rows.items()}, calibration)
    return model, vectors, names


def hard_queries(rng, vectors, names, count=400):
    """Survey images (their own vectors, bit for bit), near-copies of them and new images, with their keys."""
    dim = vectors.shape[1]
    own = rng.choice(len(vectors), count // 4, replace=False)
    near = l2_normalise(vectors[own] + 1e-9 * rng.normal(size=(len(own), dim)))
    new = l2_normalise(rng.normal(size=(count - 2 * len(own), dim)))
    queries = np.vstack([vectors[own], near, new])
    keys = [*names[own], *[f"near_{i}.jpg" for i in range(len(own))], *[f"new_{i}.jpg" for i in range(len(new))]]
    order = rng.permutation(len(queries))
    return queries[order], [keys[i] for i in order]


def assert_same_estimates(got, want, atol=1e-9):
    for field in FIELDS:
        a, b = getattr(got, field), getattr(want, field)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=field)
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=field)
    np.testing.assert_array_equal(got.out_of_domain, want.out_of_domain)
    np.testing.assert_array_equal(got.in_survey, want.in_survey)
    assert got.level == want.level


CASES = [(1, "softmax10**", 1500), (10, "divbysum", 1500), (40, "softmax**8", 1500), (40, "fixed", 800),
         (25, "softmax", 800), (5000, "softmax10**", 300)]  # K past every category's samples: whole categories


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k,weighting,n", CASES)
def test_estimates_equal_the_cpus(device, k, weighting, n):
    rng = np.random.default_rng(k)
    model, vectors, names = hard_model(rng, n=n, k=k, weighting=weighting)
    queries, keys = hard_queries(rng, vectors, names, count=4 * min(100, n // 4))
    device_estimator = DeviceEstimator(model, device=_device(device))
    for include_self in (False, True):
        want = Estimator(model).estimate(queries, keys, include_self)
        got = device_estimator.estimate(queries, keys, include_self)
        assert want.in_survey.sum() == len(queries) // 4 and np.isfinite(want.lo).any()
        assert np.isnan(want.lo[:, 4]).all()  # the uncalibrated category
        assert_same_estimates(got, want)
    assert (want.best_similarity[want.in_survey] == 1.0).all()  # with their own samples: exactly 1
    neighbours = device_estimator.scorer.neighbours(queries)
    for category, found in MultiScorer(model).neighbours(queries).items():
        np.testing.assert_array_equal(neighbours[category].index, found.index)
        np.testing.assert_allclose(neighbours[category].similarity, found.similarity, rtol=0, atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_stored_rows_are_estimated_as_rating_estimates_them(device, precision):
    """Float16 rows as stored, some far from unit length, some zero: normalised on the device, they give what
    rating gives for the same rows normalised on the CPU (zero rows: empty estimates)."""
    rng = np.random.default_rng(2)
    model, vectors, names = hard_model(rng, n=800, k=12)
    queries, keys = hard_queries(rng, vectors, names, count=240)
    stored = (queries * rng.uniform(0.01, 300, size=(len(queries), 1))).astype(np.float16)
    stored[[3, 50, 77]] = 0
    device_estimator = DeviceEstimator(model, device=_device(device), precision=precision)
    for include_self in (False, True):
        want = estimate_chunk(Estimator(model), Chunk(keys, np.ones(len(keys)), keys, l2_normalise(stored)),
                              include_self)
        got = device_estimator.estimate_stored(stored, keys, include_self)
        assert np.isnan(got.scores[[3, 50, 77]]).all() and not got.out_of_domain[[3, 50, 77]].any()
        assert_same_estimates(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stored", [True, False])
def test_chunks_stream_through_the_device_in_order(device, stored):
    rng = np.random.default_rng(4)
    model, vectors, names = hard_model(rng, n=600, k=8)
    queries, keys = hard_queries(rng, vectors, names, count=300)
    rows = queries.astype(np.float16) if stored else queries
    bounds = [0, 1, 90, 91, 200, 300]
    chunks = [Chunk(keys[a:b], np.ones(b - a), keys[a:b], rows[a:b]) for a, b in zip(bounds, bounds[1:])]
    estimator = DeviceEstimator(model, device=_device(device))
    estimator.scorer.block_size = 64  # several blocks per chunk
    results = list(estimator.estimate_chunks(iter(chunks), include_self=False, stored=stored))
    assert [chunk for chunk, _ in results] == chunks
    cpu = Estimator(model)
    for chunk, got in results:
        vectors_ = l2_normalise(chunk.vectors) if stored else chunk.vectors
        assert_same_estimates(got, estimate_chunk(cpu, Chunk(chunk.names, chunk.crops, chunk.first_crop,
                                                             vectors_), False))


def test_rows_with_nan_or_the_wrong_size_are_refused():
    rng = np.random.default_rng(6)
    model, vectors, names = hard_model(rng, n=300, k=5)
    estimator = DeviceEstimator(model, device="cpu")
    rows = vectors[:20].astype(np.float16)
    rows[7, 3] = np.nan
    with pytest.raises(PerceptError, match="^the query vectors contain NaN or infinite values: re-encode the images$"):
        estimator.estimate_stored(rows)
    with pytest.raises(PerceptError, match="contain NaN or infinite"):
        estimator.estimate(np.where(np.isnan(rows), np.inf, rows).astype(np.float64))
    with pytest.raises(PerceptError, match="have shape .20, 95. .*the model's vectors have 96 dimensions"):
        estimator.estimate_stored(rows[:, 1:])


def test_leave_out_equals_the_cpus():
    rng = np.random.default_rng(7)
    index = rng.integers(0, 50, size=(200, 12))
    similarity = np.sort(rng.uniform(size=(200, 12)), axis=1)[:, ::-1].copy()
    excluded = rng.random((200, 12)) < 0.4
    for k in (1, 5, 12):
        want, want_counts = leave_one_out.leave_out(Neighbours(index, similarity), excluded, k)
        got_index, got_similarity, got_counts = torch_statistics.leave_out(
            torch.from_numpy(index), torch.from_numpy(similarity), torch.from_numpy(excluded), k)
        np.testing.assert_array_equal(got_index.numpy(), want.index)
        np.testing.assert_array_equal(got_similarity.numpy(), want.similarity)
        np.testing.assert_array_equal(got_counts.numpy(), want_counts)


@pytest.mark.parametrize("method", list(weighting.WEIGHTINGS))
def test_statistics_over_uneven_counts_equal_the_cpus(method):
    rng = np.random.default_rng(len(method))
    similarity = np.sort(rng.uniform(-0.2, 1.0, size=(300, 9)), axis=1)[:, ::-1].copy()
    index = rng.integers(0, 40, size=(300, 9))
    counts = rng.integers(0, 10, 300)
    scores = rng.integers(1, 6, 40).astype(float)
    similarity[np.arange(9)[None, :] >= counts[:, None]] = np.nan  # past a row's end, as leave_out leaves it
    want = neighbour_statistics(Neighbours(index, similarity), counts, scores, method)
    got = torch_statistics.neighbour_statistics(torch.from_numpy(index), torch.from_numpy(similarity),
                                                torch.from_numpy(counts), torch.from_numpy(scores), method)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a.numpy()), np.isnan(b))
        np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-12)
    assert np.isnan(want[0][counts == 0]).all() and (counts == 0).any()


def test_make_estimator_picks_the_device(monkeypatch):
    rng = np.random.default_rng(8)
    model, _, _ = hard_model(rng, n=200, k=5)
    assert type(make_estimator(model, device="cpu")) is Estimator
    monkeypatch.setattr("percept.model.devices.cuda_available", lambda: False)
    with pytest.raises(PerceptError, match="--device cuda: torch sees no CUDA device on this machine"):
        make_estimator(model, device="cuda")


def test_large_calls_go_to_the_device_a_chunk_at_a_time(monkeypatch):
    """Many rows in one call: the same estimates from chunks of 64 rows and re-ranking a few queries at a time."""
    rng = np.random.default_rng(9)
    model, vectors, names = hard_model(rng, n=400, k=6)
    queries, keys = hard_queries(rng, vectors, names, count=200)
    estimator = DeviceEstimator(model, device="cpu")
    whole = estimator.estimate(queries, keys)
    neighbours = estimator.scorer.neighbours(queries)
    monkeypatch.setattr("percept.model.torch_estimates.DEVICE_CHUNK", 64)
    monkeypatch.setattr("percept.model.torch_scoring.DEVICE_CHUNK", 64)
    monkeypatch.setattr("percept.model.torch_scoring.RERANK_VALUES", 5000)  # candidates a few queries at a time
    assert_same_estimates(estimator.estimate(queries, keys), whole, atol=0)
    for category, found in estimator.scorer.neighbours(queries).items():
        np.testing.assert_array_equal(found.index, neighbours[category].index)
    assert_same_estimates(estimator.estimate(queries, keys), Estimator(model).estimate(queries, keys))
    empty = estimator.estimate_stored(np.empty((0, 96), dtype=np.float16), [])
    assert empty.scores.shape == (0, 5) and not empty.in_survey.any()
    assert estimator.scorer.neighbours(np.empty((0, 96)))["safety"].index.shape == (0, 6)
