"""The torch scorer finds the CPU scorer's neighbours: run here with torch on the CPU, and on CUDA
where a GPU is present (scores within 1e-9 there).

Neighbours are identical; similarities and scores agree to float64 rounding (torch and numpy sum
a dot product's terms in their own order)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_rating import city, model_path  # noqa: F401 - fixtures
from test_scoring import average_model, clustered_model, demographic_model, sparse_model, unit
from test_uncertainty import survey_model

from percept.categories import CATEGORIES
from percept.cli.main import main as percept_main
from percept.errors import PerceptError
from percept.model.devices import make_scorer, resolve_device
from percept.model.estimates import Estimator
from percept.model.io import ExportedModel, ModelSettings
from percept.model.scoring import MultiScorer
from percept.model.torch_scoring import TorchScorer

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()

MODELS = [
    (average_model, 10, "softmax10**"), (average_model, 40, "divbysum"), (average_model, 3, "fixed"),
    (demographic_model, 10, "softmax10**"), (demographic_model, 40, "softmax**8"),
    (sparse_model, 40, "softmax10**"), (sparse_model, 1, "softmax"), (clustered_model, 10, "softmax10**"),
]


def _model(build, k, weighting):
    rng = np.random.default_rng(k)
    model = build(rng)
    model.settings.weighting, model.settings.k = weighting, k
    return model, unit(rng, 300, model.dim)


def _compare(model, queries, device, atol):
    want, want_found = MultiScorer(model, block_size=128).predict_with_neighbours(queries)
    got, got_found = TorchScorer(model, device=device, block_size=128).predict_with_neighbours(queries)
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    for category in CATEGORIES:
        np.testing.assert_array_equal(got_found[category].index, want_found[category].index)
        np.testing.assert_allclose(got_found[category].similarity, want_found[category].similarity, rtol=0,
                                   atol=1e-14)


@pytest.mark.parametrize("build,k,weighting", MODELS)
def test_torch_on_the_cpu_equals_the_numpy_scorer(build, k, weighting):
    _compare(*_model(build, k, weighting), "cpu", atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("build,k,weighting", MODELS)
def test_cuda_scores_within_1e9_of_the_cpu(build, k, weighting):
    _compare(*_model(build, k, weighting), "cuda", atol=1e-9)


def test_near_ties_finer_than_float32_widen_the_candidates():
    """300 vectors closer together than float32 can tell apart: the first candidates cannot settle
    the K-th neighbour, so more are taken until it is sure; neighbours equal a float64 brute force."""
    rng = np.random.default_rng(5)
    base = unit(rng, 1, 16)
    near = base + 1e-4 * rng.normal(size=(300, 16))
    vectors = np.vstack([near / np.linalg.norm(near, axis=1, keepdims=True), unit(rng, 100, 16)])
    scores = rng.uniform(1, 5, 400)
    model = ExportedModel({"walkability": vectors}, {"walkability": scores}, ModelSettings(k=20))
    queries = np.vstack([base, unit(rng, 30, 16)])
    predicted, found = TorchScorer(model, device="cpu").predict_with_neighbours(queries)
    sims = queries @ vectors.T
    brute = np.array([np.lexsort((np.arange(400), -row))[:20] for row in sims])
    np.testing.assert_array_equal(found["walkability"].index, brute)
    reference = ExportedModel({"walkability": vectors[brute[0]]}, {"walkability": scores[brute[0]]},
                              ModelSettings(k=20))
    np.testing.assert_allclose(predicted[0], MultiScorer(reference).predict(queries[:1])[0], rtol=0, atol=1e-12)


def test_exact_ties_are_ordered_by_training_order():
    vectors = np.repeat(np.eye(4), 3, axis=0)  # each vector rated three times
    scores = np.arange(12, dtype=float)
    model = ExportedModel({"walkability": vectors}, {"walkability": scores}, ModelSettings(k=4))
    _, found = TorchScorer(model, device="cpu").predict_with_neighbours(np.eye(4)[[1]])
    assert found["walkability"].index.tolist() == [[3, 4, 5, 0]]


def test_estimates_with_survey_images_left_out_equal_the_cpu():
    """Leave-one-out searches a copy of the scorer with a larger K: the torch scorer follows it."""
    rng = np.random.default_rng(11)
    model, vectors, names = survey_model(rng, ratings=3)
    keys = [*names[:40], *[f"new_{i}.jpg" for i in range(20)]]
    queries = np.vstack([vectors[:40], unit(rng, 20, vectors.shape[1])])
    want = Estimator(model).estimate(queries, keys)
    got = Estimator(model, scorer=TorchScorer(model, device="cpu")).estimate(queries, keys)
    assert got.in_survey.sum() == 40
    for field in ("scores", "sd", "best_similarity"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got.out_of_domain, want.out_of_domain)


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if CUDA else "cpu")
    with pytest.raises(PerceptError, match="--device must be one of auto, cpu, cuda"):
        resolve_device("tpu")
    model, _ = _model(average_model, 10, "softmax10**")
    assert type(make_scorer(model, device="cpu")) is MultiScorer


def _rate(model, folder, out, device):
    return percept_main(["rate", "--model", str(model), "--embeddings", str(folder), "--out", str(out),
                         "--device", device, "--chunk-size", "8", "-q"])


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_rate_on_cuda_within_1e9_of_the_cpu(tmp_path, model_path, city):  # noqa: F811
    assert _rate(model_path, city[0], tmp_path / "cpu.csv", "cpu") == 0
    assert _rate(model_path, city[0], tmp_path / "cuda.csv", "cuda") == 0
    cpu, cuda = pd.read_csv(tmp_path / "cpu.csv"), pd.read_csv(tmp_path / "cuda.csv")
    assert cuda["image"].tolist() == cpu["image"].tolist()
    np.testing.assert_allclose(cuda[list(CATEGORIES)], cpu[list(CATEGORIES)], rtol=0, atol=1e-9)


def test_rate_on_cuda_without_a_gpu_is_one_error_line(tmp_path, model_path, city, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr("percept.model.devices.cuda_available", lambda: False)
    assert _rate(model_path, city[0], tmp_path / "cuda.csv", "cuda") == 2
    assert capsys.readouterr().err == ("error: --device cuda: torch sees no CUDA device on this machine: "
                                       "use --device cpu\n")
    assert not (tmp_path / "cuda.csv").exists()
