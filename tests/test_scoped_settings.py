"""Searches change process-wide settings (BLAS threads, torch's float32 precision) only while they run, and
leave them as they found them, also when searches overlap on several threads (as under the web server)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from percept.model import exact_search, screens
from percept.model.exact_search import SearchSpace, search
from percept.model.shared_settings import IEEE_FLOAT32, ONE_BLAS_THREAD, SharedSetting


def blas_threads() -> list[int]:
    """The thread count of every BLAS library loaded in the process."""
    np.ones((8, 8)) @ np.ones((8, 8))  # numpy's BLAS is loaded by its first product
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def hold_in_thread(setting: SharedSetting) -> tuple[threading.Event, threading.Thread]:
    """A thread holding ``setting`` until the returned event is set (held once this returns)."""
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with setting.held():
            entered.set()
            leave.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    assert entered.wait(30)
    return leave, thread


def test_overlapping_holders_restore_the_setting_only_when_the_last_one_leaves():
    value = {"current": "user's"}

    def apply():
        before, value["current"] = value["current"], "search's"
        return lambda: value.update(current=before)

    setting = SharedSetting(apply, "test")
    leave_first, first = hold_in_thread(setting)
    leave_second, second = hold_in_thread(setting)
    assert value["current"] == "search's"
    leave_first.set()
    first.join()
    assert value["current"] == "search's"  # the second holder still relies on it
    leave_second.set()
    second.join()
    assert value["current"] == "user's"
    with setting.held():  # and it applies again for the next holder
        assert value["current"] == "search's"
    assert value["current"] == "user's"


def test_a_failed_apply_holds_nothing():
    calls = []

    def apply():
        if not calls:
            calls.append("failed")
            raise OSError("no such library")
        calls.append("applied")
        return lambda: calls.append("restored")

    setting = SharedSetting(apply, "test")
    with pytest.raises(OSError), setting.held():
        pass
    with setting.held():  # the failure left no holder behind: the next one applies it
        pass
    assert calls == ["failed", "applied", "restored"]


def test_blas_limits_of_overlapping_searches_are_restored_by_the_last_one():
    before = blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    leave_first, first = hold_in_thread(ONE_BLAS_THREAD)
    leave_second, second = hold_in_thread(ONE_BLAS_THREAD)
    assert set(blas_threads()) == {1}
    leave_first.set()
    first.join()
    assert set(blas_threads()) == {1}
    leave_second.set()
    second.join()
    assert blas_threads() == before


def test_searches_on_several_threads_use_one_blas_thread_each_and_leave_the_limits_as_they_were(monkeypatch):
    monkeypatch.setattr(exact_search, "THREADS", 2)  # several search threads, whatever the machine
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(2000, 48))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.normal(size=(600, 48))
    tiles = screens.use_tiles(False)  # the float32 screen, whose products run on BLAS
    try:
        space = SearchSpace(vectors, np.arange(len(vectors)), [np.arange(len(vectors))])
    finally:
        screens.use_tiles(tiles)
    seen: list[list[int]] = []
    screen = type(space.screen)
    original = screen.similarities

    def similarities(self, q64, out, maxima=None):
        seen.append(blas_threads())
        return original(self, q64, out, maxima)

    monkeypatch.setattr(screen, "similarities", similarities)
    before = blas_threads()
    with ThreadPoolExecutor(3) as callers:  # three searches at once, each on two threads
        found = list(callers.map(lambda _: search(space, queries, 5, block=100, threads=2), range(3)))
    assert blas_threads() == before
    assert len(seen) >= 3 * 6 and all(set(counts) == {1} for counts in seen)
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :5]
    for result in found:
        np.testing.assert_array_equal(result[0].index, expected)


def float32_precisions(torch) -> dict[str, object]:
    cuda = torch.backends.cuda.matmul
    if not hasattr(cuda, "fp32_precision"):
        return {"cuda": cuda.allow_tf32}
    return {"cuda": cuda.fp32_precision, "mkldnn": torch.backends.mkldnn.matmul.fp32_precision}


@pytest.fixture
def fast_float32(monkeypatch):
    """Torch as a user may set it: TF32 products on CUDA, bfloat16 ones on CPUs that have them."""
    torch = pytest.importorskip("torch")
    saved = float32_precisions(torch)
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    yield torch
    if "mkldnn" in saved:
        torch.backends.cuda.matmul.fp32_precision = saved["cuda"]
        torch.backends.mkldnn.matmul.fp32_precision = saved["mkldnn"]
    else:
        torch.backends.cuda.matmul.allow_tf32 = saved["cuda"]


def test_overlapping_device_searches_restore_torch_precision_when_the_last_one_leaves(fast_float32):
    torch = fast_float32
    users = float32_precisions(torch)
    leave_first, first = hold_in_thread(IEEE_FLOAT32)
    leave_second, second = hold_in_thread(IEEE_FLOAT32)
    full = {"cuda": "ieee", "mkldnn": "ieee"} if "mkldnn" in users else {"cuda": False}
    assert float32_precisions(torch) == full
    leave_first.set()
    first.join()
    assert float32_precisions(torch) == full
    leave_second.set()
    second.join()
    assert float32_precisions(torch) == users


def test_a_torch_scorer_leaves_torch_precision_as_the_user_set_it(fast_float32):
    from test_scoring import average_model, unit

    from percept.model.scoring import MultiScorer
    from percept.model.torch_scoring import TorchScorer

    torch = fast_float32
    users = float32_precisions(torch)
    rng = np.random.default_rng(3)
    model = average_model(rng)
    queries = unit(rng, 200, model.dim)
    got = TorchScorer(model, device="cpu", block_size=64).predict(queries)
    assert float32_precisions(torch) == users
    np.testing.assert_allclose(got, MultiScorer(model, block_size=64).predict(queries), rtol=0, atol=1e-12)
