"""The device screen's bound holds and the device's float64 sums have the CPU's bits (torch on the CPU here,
CUDA where a GPU is present).

The bound is checked value by value against the CPU path's own float64 similarities, on data made to strain
it: elements that underflow float16, stored rows of every length float16 holds, vectors closer together than
the screen can tell apart. A cut from it never loses a true neighbour: the neighbours equal a float64 brute
force even when thousands of vectors tie to within float16's resolution."""

from __future__ import annotations

import numpy as np
import pytest

from percept.errors import PerceptError
from percept.model import pure_search
from percept.model.io import ExportedModel, ModelSettings
from percept.model.knn import l2_normalise
from percept.model.scoring import MultiScorer

torch = pytest.importorskip("torch")

from percept.model.torch_rows import fixed_order_products, unit_rows  # noqa: E402
from percept.model.torch_scoring import TorchScorer  # noqa: E402
from percept.model.torch_screen import PRECISIONS, DeviceScreen, check_precision  # noqa: E402

DEVICES = ["cpu"] + [pytest.param("cuda", marks=pytest.mark.gpu)]


def _device(name):
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device(name)


def strained_vectors(rng, n, dim):
    """Unit vectors with elements from 1 down to below float16's smallest subnormal, and near-copies."""
    rows = rng.normal(size=(n, dim)) * 10.0 ** rng.uniform(-9, 0, size=(n, dim))
    rows[: n // 4] = rows[0] + 1e-7 * rng.normal(size=(n // 4, dim))  # closer than float16 can tell
    rows[n // 4, :] = 0.0
    rows[n // 4, 3] = 1.0  # one element carries the whole length
    return l2_normalise(rows)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [5, 32, 77, 256])
def test_fixed_order_sums_have_the_kernels_bits(device, dim):
    rng = np.random.default_rng(dim)
    left, right = rng.normal(size=(40, dim)) * 1e3, rng.normal(size=(40, dim))
    want = pure_search.fixed_order_sums(left * right)
    got = fixed_order_products(torch.from_numpy(left).to(_device(device)), torch.from_numpy(right).to(device))
    np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_stored_rows_are_normalised_as_l2_normalise_does_bit_for_bit(device, dtype):
    """Norms whose float64 sums of squares round (rows far from unit length) included."""
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(300, 96)) * 10.0 ** rng.uniform(-4, 3.5, size=(300, 1))
    rows[7] = 0.0
    stored = rows.astype(dtype)
    unit, norms, divisors = unit_rows(torch.from_numpy(stored).to(_device(device)))
    np.testing.assert_array_equal(unit.cpu().numpy(), l2_normalise(stored))
    assert norms[7] == 0 and divisors[7] == 1 and not unit[7].any()


def _cpu_similarities(queries64, vectors64):
    """The CPU path's float64 similarities (the compiled kernels' order) of every query with every vector."""
    rows, columns = np.meshgrid(np.arange(len(queries64)), np.arange(len(vectors64)), indexing="ij")
    return pure_search.similarities(queries64, vectors64, rows.ravel(), columns.ravel()).reshape(rows.shape)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_screen_values_lie_within_their_bound(device, precision):
    rng = np.random.default_rng(11)
    dim = 200
    vectors = strained_vectors(rng, 600, dim)
    screen = DeviceScreen(torch.from_numpy(vectors).to(_device(device)), precision)
    # stored float16 rows: unit ones, long ones (elements up to float16's largest) and tiny ones
    stored = np.vstack([strained_vectors(rng, 100, dim), 60000 * strained_vectors(rng, 50, dim),
                        1e-3 * strained_vectors(rng, 50, dim), vectors[:20]]).astype(np.float16)
    unit, _, divisors = unit_rows(torch.from_numpy(stored).to(device))
    want = _cpu_similarities(l2_normalise(stored), vectors)
    with screen.held():
        cases = [screen.similarities(torch.from_numpy(stored).to(device), divisors), screen.similarities(unit)]
    for screened in cases:
        error = np.abs(screened.values(screened.sums).cpu().numpy() - want)
        assert (error <= screened.eps.cpu().numpy()[:, None]).all()
    useful = {"fp16": 2e-3, "bf16": 2e-2, "fp32": 1e-4}[precision]
    assert float(cases[1].eps[:100].max()) < useful  # a bound that lets few vectors through


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_no_true_neighbour_is_cut_on_near_ties(device, precision):
    """2,000 vectors within 1e-7 of one another (float16 rounds them to the same values) and the K-th neighbour
    among them: the neighbours equal a float64 brute force, ties by training order."""
    rng = np.random.default_rng(5)
    dim = 64
    base = l2_normalise(rng.normal(size=(1, dim)))
    near = l2_normalise(base + 1e-7 * rng.normal(size=(2000, dim)))
    vectors = np.vstack([near, near[:100], l2_normalise(rng.normal(size=(500, dim)))])  # with exact duplicates
    scores = rng.integers(1, 6, len(vectors)).astype(float)
    model = ExportedModel({"walkability": vectors}, {"walkability": scores}, ModelSettings(k=40))
    queries = np.vstack([base, l2_normalise(base + 1e-8 * rng.normal(size=(30, dim))), near[:20],
                         l2_normalise(rng.normal(size=(30, dim)))])
    scorer = TorchScorer(model, device=str(_device(device)), precision=precision, block_size=32)
    predicted, found = scorer.predict_with_neighbours(queries)
    sims = _cpu_similarities(queries, vectors)
    brute = np.array([np.lexsort((np.arange(len(vectors)), -row))[:40] for row in sims])
    np.testing.assert_array_equal(found["walkability"].index, brute)
    want, _ = MultiScorer(model).predict_with_neighbours(queries)
    np.testing.assert_allclose(predicted, want, rtol=0, atol=1e-12)


def permuted_twins(rng, pairs, dim):
    """Queries with equal elements in two places, and vectors in pairs that differ by swapping those two:
    their exact similarities are equal, and sums in different orders round them apart."""
    queries = rng.normal(size=(pairs, dim))
    queries[:, 1] = queries[:, 0]
    queries = l2_normalise(queries)
    first = rng.normal(size=(pairs, dim)) * 10.0 ** rng.uniform(-3, 0, size=(pairs, dim))
    second = first.copy()
    second[:, [0, 1]] = first[:, [1, 0]]
    return queries, l2_normalise(np.vstack([first, second]))


@pytest.mark.parametrize("device", DEVICES)
def test_float64_ties_order_as_the_cpu_orders_them(device):
    """Pairs of vectors whose exact similarities to a query are equal: whichever the CPU's sums put first, the
    device's neighbours put first."""
    rng = np.random.default_rng(8)
    queries, vectors = permuted_twins(rng, 200, 48)
    model = ExportedModel({"walkability": vectors}, {"walkability": rng.uniform(1, 5, len(vectors))},
                          ModelSettings(k=1))
    want = MultiScorer(model).neighbours(queries)["walkability"]
    got = TorchScorer(model, device=str(_device(device))).neighbours(queries)["walkability"]
    np.testing.assert_array_equal(got.index, want.index)
    np.testing.assert_array_equal(got.similarity, want.similarity)  # tied pairs are summed in the CPU's order


def test_every_candidate_summed_in_the_cpus_order_gives_the_cpus_bits(monkeypatch):
    """With the tie tolerance made wide, every query takes the fixed-order sums: similarities bit for bit."""
    rng = np.random.default_rng(9)
    vectors = l2_normalise(rng.normal(size=(500, 40)))
    model = ExportedModel({"walkability": vectors, "safety": vectors[:300]},
                          {"walkability": rng.uniform(1, 5, 500), "safety": rng.uniform(1, 5, 300)}, ModelSettings(k=7))
    queries = l2_normalise(rng.normal(size=(100, 40)))
    monkeypatch.setattr(TorchScorer, "_tie_tolerance", lambda self, unit: torch.ones(len(unit), dtype=torch.float64))
    got = TorchScorer(model, device="cpu").neighbours(queries)
    for category, want in MultiScorer(model).neighbours(queries).items():
        np.testing.assert_array_equal(got[category].index, want.index)
        np.testing.assert_array_equal(got[category].similarity, want.similarity)


def test_precisions_are_checked_and_long_columns_screen_in_float32():
    assert check_precision("bf16") == "bf16"
    with pytest.raises(PerceptError, match="--precision must be one of fp16, bf16, fp32 for scoring, got 'fp8'"):
        check_precision("fp8")
    long = torch.from_numpy(np.full((3, 4), 40000.0))
    assert DeviceScreen(long, "fp16").dtype == torch.float32
    with pytest.raises(PerceptError, match="training vectors contain NaN"):
        DeviceScreen(torch.tensor([[1.0, float("nan")]], dtype=torch.float64))
