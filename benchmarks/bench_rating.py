"""``percept rate`` throughput and peak memory on 200,000 query vectors, and /api/point latency on 1M points.

The pure path (``PERCEPT_PURE=1``: numpy in place of the C kernels, as where they were not built) rates a
smaller set of 20,000 vectors, beside the compiled path on the same set.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import time

import numpy as np
import pandas as pd

from benchmarks.common import (
    BENCH_DIR,
    SURVEY_DIM,
    benchmark_survey,
    console_script,
    measure,
)

QUERIES = 200_000
PURE_QUERIES = 20_000
PART_SIZE = 100_000
POINTS = 1_000_000
CLICKS = 300
LIMIT_QUERIES = 16_384
#: Runs of ``percept rate`` per benchmark, each between two measurements of the products.
RATE_RUNS = 3
TARGET_SHARE = 0.8
#: The share of the bfloat16 product's rate that rating aims for (its screen runs on bfloat16 AMX tiles).
TARGET_BF16_SHARE = 0.5
TARGET_PEAK_MB = 2048.0
TARGET_POINT_MS = 10.0


def export_model(survey) -> str:
    """The benchmark survey exported by the drop-in CLI (averages, K=40 as the published model)."""
    model = survey / "model-k40.npz"
    if not model.exists():
        measure([console_script("clip_retrieval_knn"), "-g", "data.geojson", "-e", "embeddings", "-M", "synthetic",
                 "-k", "40", "-q", "--export", str(model)], survey)
    return str(model)


def query_embeddings(seed: int = 1, count: int = QUERIES):
    """``count`` unit float16 vectors in clip-retrieval layout (parts of up to 100,000), written once."""
    from percept.data.embeddings import write_part

    folder = BENCH_DIR / f"queries-{count}x{SURVEY_DIM}"
    if not (folder / "img_emb" / f"img_emb_{(count - 1) // PART_SIZE}.npy").exists():
        rng = np.random.default_rng(seed)
        for part, start in enumerate(range(0, count, PART_SIZE)):
            size = min(PART_SIZE, count - start)
            vectors = rng.normal(size=(size, SURVEY_DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            names = [f"q_{i}.jpg" for i in range(start, start + size)]
            write_part(folder, "img", part, vectors, pd.DataFrame({"image_path": names}))
    return folder


def _distinct_vectors(model_path: str) -> np.ndarray:
    from percept.model.distinct import distinct_rows
    from percept.model.io import load_model

    model = load_model(model_path)
    return distinct_rows([model.vectors[c] for c in model.categories])[0].astype(np.float32)


def product_limit(model_path: str, queries: int = LIMIT_QUERIES, block: int = 2048) -> float:
    """Vectors/s that the bare float32 product with the model's distinct vectors allows (best of two)."""
    vectors = _distinct_vectors(model_path)
    rng = np.random.default_rng(3)
    query = rng.standard_normal((block, vectors.shape[1]), dtype=np.float32)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for _ in range(queries // block):
            query @ vectors.T
        best = min(best, time.perf_counter() - start)
    return queries / best


def bfloat16_limit(model_path: str, queries: int = LIMIT_QUERIES, block: int = 2048) -> tuple[float, float] | None:
    """Vectors/s that the bare bfloat16 product (float32 sums) of the same shapes allows on all cores (torch,
    oneDNN: AMX where present; best of two), and vectors per second of CPU time in that run; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    vectors = torch.from_numpy(_distinct_vectors(model_path)).to(torch.bfloat16)
    query = torch.randn(block, vectors.shape[1], dtype=torch.bfloat16)
    columns = vectors.T.contiguous()
    query @ columns  # warm-up
    best, cpu = float("inf"), float("inf")
    for _ in range(2):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(queries // block):
            query @ columns
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        if seconds < best:
            best, cpu = seconds, cpu_seconds
    return queries / best, queries / cpu


def children_cpu() -> float:
    """CPU seconds (user and system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rate_run(model: str, queries) -> tuple[float, float, float]:
    """(seconds, peak MB, CPU seconds) of one run of ``percept rate``."""
    cpu = children_cpu()
    seconds, peak, _ = measure([console_script("percept"), "rate", "--model", model, "-e", str(queries),
                                "--out", str(BENCH_DIR / "rated.parquet"), "--quiet"], BENCH_DIR)
    return seconds, peak, children_cpu() - cpu


def bracketed(figures: list[float], limits: list[float]) -> list[float]:
    """Each run's figure over the faster of the limits measured just before and just after it."""
    return [figure / max(limits[i], limits[i + 1]) for i, figure in enumerate(figures)]


def percentages(shares: list[float]) -> str:
    """The shares as whole percentages, in order."""
    return ", ".join(f"{share:.0%}" for share in shares)


def rating() -> None:
    """``RATE_RUNS`` runs of ``percept rate``, each between two measurements of the bare products of its shapes
    (each the best of two passes), so that a change in the machine's speed moves a run and its limits together:
    each run's share of the faster product beside it, and the best."""
    survey = benchmark_survey()
    model = export_model(survey)
    queries = query_embeddings()
    limits, bf16 = [product_limit(model)], [bfloat16_limit(model)]
    runs = []
    for _ in range(RATE_RUNS):
        runs.append(rate_run(model, queries))
        limits.append(product_limit(model))
        bf16.append(bfloat16_limit(model))
    rates = [QUERIES / seconds for seconds, _, _ in runs]
    shares = bracketed(rates, limits)
    print(f"  percept rate: {QUERIES:,} vectors x {SURVEY_DIM} dims against the 20,000-image model (K=40): "
          f"{max(rates):,.0f} vectors/s in the best of {len(runs)} runs "
          f"({', '.join(f'{seconds:.1f}' for seconds, _, _ in runs)} s), peak {max(p for _, p, _ in runs):,.0f} MB "
          f"(goal < {TARGET_PEAK_MB:,.0f} MB)")
    print(f"    limit: the bare float32 product of the same shapes allows {min(limits):,.0f}-{max(limits):,.0f} "
          f"vectors/s, measured before and after each run; each run reaches {percentages(shares)} of the faster "
          f"beside it, {max(shares):.0%} at best (goal >= {TARGET_SHARE:.0%})")
    products = [figures for figures in bf16 if figures is not None]
    if len(products) == len(bf16):
        walls, per_cpu = [wall for wall, _ in products], [vectors for _, vectors in products]
        shares = bracketed(rates, walls)
        print(f"    limit: the bare bfloat16 product of the same shapes (the screen's arithmetic) allows "
              f"{min(walls):,.0f}-{max(walls):,.0f} vectors/s, measured before and after each run; each run reaches "
              f"{percentages(shares)} of the faster beside it, {max(shares):.0%} at best; the fastest run "
              f"{max(rates) / max(walls):.0%} of the fastest product (goal >= {TARGET_BF16_SHARE:.0%})")
        cpu_rates = [QUERIES / cpu for _, _, cpu in runs]
        print(f"    per second of CPU time (less moved by other jobs on the machine): rate "
              f"{', '.join(f'{rate:,.0f}' for rate in cpu_rates)} vectors ("
              f"{', '.join(f'{cpu:.1f}' for _, _, cpu in runs)} s of CPU, start and output included), the bfloat16 "
              f"product {min(per_cpu):,.0f}-{max(per_cpu):,.0f}: each run {percentages(bracketed(cpu_rates, per_cpu))} "
              f"of the faster beside it")


def pure_rating() -> None:
    """The pure path beside the compiled one, on 20,000 vectors (the same rated values, compared)."""
    from benchmarks.bench_dropin import pure_path

    model, queries = export_model(benchmark_survey()), query_embeddings(seed=2, count=PURE_QUERIES)
    rated = {}
    for name in ("compiled", "pure"):
        out = BENCH_DIR / f"rated-{name}.parquet"
        command = [console_script("percept"), "rate", "--model", model, "-e", str(queries), "--out", str(out),
                   "--quiet"]
        with pure_path() if name == "pure" else contextlib.nullcontext():
            seconds, peak, _ = measure(command, BENCH_DIR)
        rated[name] = (seconds, peak, pd.read_parquet(out).select_dtypes("number"))
    (fast, fast_peak, want), (pure, pure_peak, got) = rated["compiled"], rated["pure"]
    same = "the same" if got.equals(want) else "DIFFERENT"
    print(f"  percept rate on {PURE_QUERIES:,} vectors: compiled {PURE_QUERIES / fast:,.0f} vectors/s "
          f"(peak {fast_peak:,.0f} MB), pure path (PERCEPT_PURE=1, no C) {PURE_QUERIES / pure:,.0f} vectors/s "
          f"(peak {pure_peak:,.0f} MB): {pure / fast:.1f}x the time; {same} rated values")


def point_latency() -> None:
    from fastapi.testclient import TestClient

    from percept.categories import CATEGORIES
    from percept.data.rated_points import RatedPoints
    from percept.model.estimates import Estimator
    from percept.model.io import ExportedModel, ModelSettings
    from percept.model.scoring import MultiScorer
    from percept.web.app import AppState, create_app

    rng = np.random.default_rng(2)
    lat = rng.uniform(52.28, 52.43, POINTS)
    lon = rng.uniform(4.73, 5.07, POINTS)
    rated = RatedPoints(np.array([f"p{i}.jpg" for i in range(POINTS)]), lon, lat,
                        rng.uniform(1, 5, (POINTS, len(CATEGORIES))), list(CATEGORIES))
    unit = np.eye(4)
    model = ExportedModel({c: unit for c in CATEGORIES}, {c: np.ones(4) for c in CATEGORIES}, ModelSettings(k=2))
    scorer = MultiScorer(model)
    start = time.perf_counter()
    client = TestClient(create_app(AppState(scorer=scorer, encode=None, estimator=Estimator(model, scorer=scorer),
                                            rated=rated)))
    build = time.perf_counter() - start
    latencies, counts = [], []
    for _ in range(CLICKS):
        params = {"lat": rng.uniform(52.3, 52.41), "lon": rng.uniform(4.75, 5.05), "radius": 100}
        start = time.perf_counter()
        body = client.get("/api/point", params=params).json()
        latencies.append((time.perf_counter() - start) * 1000)
        counts.append(body["count"])
    print(f"  /api/point on {POINTS:,} rated points: median {statistics.median(latencies):.2f} ms, "
          f"p95 {np.percentile(latencies, 95):.2f} ms over {CLICKS} clicks (radius 100 m, "
          f"{statistics.median(counts):.0f} points each; index built in {build:.1f} s; "
          f"goal < {TARGET_POINT_MS:.0f} ms)")


def main() -> None:
    rating()
    pure_rating()
    point_latency()


if __name__ == "__main__":
    main()
