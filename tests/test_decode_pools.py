"""The smallest-first worker pool with a weight budget, and the web decoder built on it."""

from __future__ import annotations

import io
import threading
from concurrent.futures import Future

import pytest
from PIL import Image

from percept.data.decode import ImageHeader, ImageLimits, ImageUnsupported
from percept.web.decoding import WIDE_WEIGHT, BoundedDecoder, decode_weight
from percept.web.pools import Job, PriorityPool, next_job


def job(size, weight, order, since=0.0) -> Job:
    return Job(size, order, weight, since, lambda: None, Future())


@pytest.mark.parametrize("waiting,in_use,now,expected", [
    ([job(9, 9, 0), job(1, 1, 1)], 0, 0, 1),       # smallest first
    ([job(9, 9, 0), job(4, 4, 1)], 7, 0, None),     # neither fits beside 7 of 10
    ([job(9, 9, 0), job(3, 3, 1)], 7, 0, 1),        # the small one fits
    ([job(20, 20, 0)], 0, 0, 0),                    # heavier than the budget: alone
    ([job(20, 20, 0)], 3, 0, None),
    ([job(9, 9, 0), job(1, 1, 1)], 9, 0, 1),        # light: starts beside anything
    ([job(9, 9, 0), job(5, 5, 1)], 0, 5, 0),        # waited past its patience: before smaller ones
    ([job(9, 9, 0), job(5, 5, 1), job(1, 1, 2)], 6, 5, 2),  # ... which still lets light ones pass
])
def test_next_job(waiting, in_use, now, expected):
    chosen = next_job(waiting, in_use, budget=10, now=now, patience=2, light=1)
    assert (chosen.order if chosen else None) == expected


def test_small_jobs_pass_large_ones_and_the_budget_holds():
    pool = PriorityPool(workers=2, name="test", budget=100, light=5)
    started, gate, finished, lock = threading.Event(), threading.Event(), [], threading.Lock()
    peak = {"in_use": 0}

    def work(name, weight):
        def run():
            with lock:
                peak["in_use"] = max(peak["in_use"], pool.in_use)
            if name == "first":
                started.set()
                gate.wait(10)
            with lock:
                finished.append(name)
        return run

    futures = [pool.submit(work("first", 80), size=80, weight=80)]
    assert started.wait(30)
    futures += [pool.submit(work(f"large{i}", 80), size=80, weight=80) for i in range(3)]
    futures.append(pool.submit(work("medium", 30), size=30, weight=30))
    futures.append(pool.submit(work("small", 2), size=2, weight=2))
    futures[-1].result(timeout=30)  # a light job runs beside the first, which still holds 80 of 100
    assert finished == ["small"]
    gate.set()
    for future in futures:
        future.result(timeout=30)
    pool.shutdown()
    assert finished == ["small", "first", "medium", "large0", "large1", "large2"]
    assert peak["in_use"] <= 100


def png(size, mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, "PNG" if mode != "F" else "TIFF")
    return out.getvalue()


def test_decode_weight_counts_wide_pixels_more():
    assert decode_weight(ImageHeader("PNG", 100, 50, "RGB")) == 5000
    assert decode_weight(ImageHeader("TIFF", 100, 50, "F")) == 5000 * WIDE_WEIGHT


def test_decoder_checks_the_header_then_decodes():
    decoder = BoundedDecoder(ImageLimits(max_pixels=10_000), workers=2)
    try:
        size = decoder.decode(lambda: png((60, 40)), "the upload", lambda image: image.size, size=100)
        assert size.result(timeout=30) == (60, 40)
        wide = decoder.decode(lambda: png((60, 40), "F"), "the upload", lambda image: image.mode)
        assert wide.result(timeout=30) == "RGB"
        with pytest.raises(ImageUnsupported):
            decoder.decode(lambda: b"\xff\xd8\xff" + b"\0" * 100_000, "the upload", lambda image: None).result(30)
    finally:
        decoder.shutdown()
