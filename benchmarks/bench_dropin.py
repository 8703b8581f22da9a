"""Drop-in CLI on the 20,000-image benchmark survey: time and peak memory, plain and with -d.

Each figure is set against the original tool's (measured on this kind of 2-core machine) and against
the bare float32 matrix products of the same shapes (each category's test vectors times its training
vectors), timed in the same run: the arithmetic no exact search can skip. The plain run is also timed
once on the pure path (``PERCEPT_PURE=1``: numpy in place of the C kernels, as where they were not built).
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from benchmarks.common import benchmark_survey, console_script, measure

#: The original tool on this kind of 2-core machine: (seconds low-high, peak MB low-high).
ORIGINAL = {"plain": ((9.4, 14.0), (2000.0, 2100.0)), "demographics": ((21.0, 21.0), (3000.0, 3000.0))}
REPEATS = 3
TRAINING_SPLIT = 0.8
GOALS = "goal: >= 10x faster and >= 8x less memory than the original, <= 2x the bare products"


def product_shapes(survey, demographics: bool) -> list[tuple[int, int, int]]:
    """(test vectors, training vectors, dims) of each category's search, as the drop-in splits them."""
    from percept.encoders.options import EncodingOptions
    from percept.study.dataset import DataSelection, load_dataset

    encoding = EncodingOptions("synthetic", embeddings_dir=survey / "embeddings")
    selection = DataSelection(survey / "data.geojson", encoding,
                              demographics=survey / "demo.csv" if demographics else None)
    data = load_dataset(selection, log=lambda message: None)
    shapes = []
    for samples in data.samples.values():
        train = int(len(samples) * TRAINING_SPLIT)
        shapes.append((len(np.unique(samples.rows[train:])), len(np.unique(samples.rows[:train])),
                       data.vectors.shape[1]))
    return shapes


def bare_products(shapes: list[tuple[int, int, int]], repeats: int = 3) -> float:
    """Best time of the float32 products of ``shapes`` (all BLAS threads, as the search uses)."""
    rng = np.random.default_rng(0)
    operands = [(rng.standard_normal((m, d), dtype=np.float32), rng.standard_normal((n, d), dtype=np.float32))
                for m, n, d in shapes]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for queries, vectors in operands:
            queries @ vectors.T
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def pure_path():
    """Commands started in the block search on the pure path (numpy in place of the C kernels)."""
    from percept.model.kernels import PURE_VARIABLE

    previous = os.environ.get(PURE_VARIABLE)
    os.environ[PURE_VARIABLE] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[PURE_VARIABLE]
        else:
            os.environ[PURE_VARIABLE] = previous


def span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if format(low, fmt) == format(high, fmt) else f"{low:{fmt}}-{high:{fmt}}"


def main() -> None:
    survey = benchmark_survey()
    base = [console_script("clip_retrieval_knn"), "-g", "data.geojson", "-e", "embeddings",
            "-M", "synthetic", "-k", "10,20,30,40,50", "-q"]
    print(f"clip_retrieval_knn on 20,000 images x 1024 dims, -k 10,20,30,40,50 ({REPEATS} runs each; {GOALS})")
    for mode, extra in (("plain", []), ("demographics", ["-d", "demo.csv"])):
        shapes = product_shapes(survey, mode == "demographics")
        products, seconds, peaks = [bare_products(shapes)], [], []
        for _ in range(REPEATS):
            took, peak, out = measure(base + extra, survey)
            seconds.append(took)
            peaks.append(peak)
            products.append(bare_products(shapes))
        (orig_s, orig_s_high), (orig_mb, orig_mb_high) = ORIGINAL[mode]
        fastest, leanest, product = min(seconds), min(peaks), min(products)
        print(f"  {mode:13s} {fastest:5.2f} s (runs {span(seconds, '.2f')} s)  peak {leanest:4.0f} MB "
              f"[{len(out.splitlines())} metric lines]")
        print(f"  {'':13s} vs the original ({span([orig_s, orig_s_high], '.1f')} s, "
              f"{span([orig_mb / 1000, orig_mb_high / 1000], '.1f')} GB): "
              f"{span([orig_s / fastest, orig_s_high / fastest], '.1f')}x faster, "
              f"{span([orig_mb / leanest, orig_mb_high / leanest], '.1f')}x less memory")
        print(f"  {'':13s} limit: the bare float32 products of the same shapes take {product:.2f} s in this run "
              f"(runs {span(products, '.2f')} s); the drop-in takes {fastest / product:.1f}x that, "
              f"a share of {product / fastest:.0%}")
        if mode == "plain":
            with pure_path():
                pure, pure_peak, pure_out = measure(base + extra, survey)
            same = "the same" if pure_out == out else "DIFFERENT"
            print(f"  {'':13s} pure path (PERCEPT_PURE=1, no C): {pure:5.2f} s, peak {pure_peak:4.0f} MB, "
                  f"{pure / fastest:.1f}x the compiled time; {same} metric lines")


if __name__ == "__main__":
    main()
