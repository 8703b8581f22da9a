"""The exact search alone, in each implementation: 20,000 unit vectors x 1024 dims, 4,000 queries, K=40.

The compiled kernels (the AMX tile screen where the CPU has it, and the float32 screen; the vector and the
portable build of the selection) and the pure path (numpy, used without the C extensions or with
``PERCEPT_PURE=1``), each best of two, set against the bare products of the same shapes that bound them (a
float32 product: the float32 screen's arithmetic; a float64 product; with torch, a bfloat16 product with float32
sums: the tile screen's arithmetic). Every implementation gives the same neighbours and the same similarity bits;
the check runs here too. Then float64 rows normalised from float16 rows, re-ranked as quotient rows, beside the
same rows re-ranked from float64 storage.

    python -m benchmarks.bench_search [--vectors N] [--queries M] [--dim D] [--k K]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

REPEATS = 2


def best_time(run, repeats: int = REPEATS) -> tuple[float, object]:
    """The best wall time of ``run()`` and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def bfloat16_seconds(queries: np.ndarray, vectors: np.ndarray) -> float | None:
    """The best time of the bare bfloat16 product of these shapes (float32 sums; torch, oneDNN: AMX where present),
    or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    q = torch.from_numpy(queries.astype(np.float32)).to(torch.bfloat16)
    columns = torch.from_numpy(vectors.astype(np.float32)).to(torch.bfloat16).T.contiguous()
    q @ columns  # warm-up
    return best_time(lambda: q @ columns)[0]


def unit_rows(rng, rows: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def setups() -> list[tuple[str, bool, bool, bool]]:
    """(name, compiled, vector build, tiles) of each implementation this machine runs."""
    from percept.model import kernels

    found = []
    if kernels.built():
        previous = kernels.use_compiled(True), kernels.vector_extensions(True)
        best = kernels.implementation()
        kernels.use_compiled(previous[0])
        kernels.vector_extensions(previous[1])
        tiles = [True, False] if kernels.tiles_available() else [False]
        for screen in tiles:
            label = "AMX tile screen" if screen else "float32 screen"
            found.append((f"compiled, {label}, {best} selection", True, True, screen))
            if best != "portable":
                found.append((f"compiled, {label}, portable selection", True, False, screen))
    found.append(("pure numpy (float32 screen)", False, False, False))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=4_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--k", type=int, default=40)
    args = parser.parse_args([] if argv is None else argv)  # make bench calls main() with its own argv
    from percept.model import kernels, screens
    from percept.model.knn import KNNRegressor

    rng = np.random.default_rng(0)
    vectors, queries = unit_rows(rng, args.vectors, args.dim), unit_rows(rng, args.queries, args.dim)
    print(f"exact search: {args.vectors:,} unit vectors x {args.dim} dims, {args.queries:,} queries, K={args.k} "
          f"(best of {REPEATS}; {os.cpu_count()} cores; fit and search)")
    v32, q32 = vectors.astype(np.float32), queries.astype(np.float32)
    for label, (a, b) in (("float32", (q32, v32)), ("float64", (queries, vectors))):
        seconds, _ = best_time(lambda a=a, b=b: a @ b.T)
        print(f"  bare {label} product of the same shapes: {seconds:6.2f} s")
    bfloat16 = bfloat16_seconds(queries, vectors)
    if bfloat16 is not None:
        print(f"  bare bfloat16 product of the same shapes: {bfloat16:6.2f} s (the tile screen's arithmetic)")
    reference = None
    previous = kernels.use_compiled(), screens.use_tiles(), kernels.vector_extensions()
    try:
        for label, compiled, vector, tiles in setups():
            kernels.use_compiled(compiled)
            screens.use_tiles(tiles)
            kernels.vector_extensions(vector)
            seconds, found = best_time(lambda: KNNRegressor(args.k).fit(vectors, np.ones(len(vectors)))
                                       .kneighbors(queries))
            reference = reference or found
            same = (np.array_equal(found.index, reference.index)
                    and found.similarity.tobytes() == reference.similarity.tobytes())
            print(f"  {label + ':':52s} {seconds:6.2f} s  "
                  f"({'same neighbours and bits' if same else 'RESULTS DIFFER'} as the first)")
    finally:
        kernels.use_compiled(previous[0])
        screens.use_tiles(previous[1])
        kernels.vector_extensions(previous[2])
    if kernels.compiled():
        quotient_rows(rng, args, queries)


def quotient_rows(rng, args, queries: np.ndarray) -> None:
    """Float64 unit rows normalised from float16 rows (a model exported from float16 embeddings), searched as they
    are (re-ranked as quotient rows) and with one element one ulp off (re-ranked from the float64 rows)."""
    from percept.model.knn import KNNRegressor
    from percept.model.unit_rows import UnitRows

    exact = np.asarray(UnitRows(rng.standard_normal((args.vectors, args.dim)).astype(np.float16)))
    off = exact.copy()
    off[0, 0] = np.nextafter(off[0, 0], 1.0)
    print("  float64 rows normalised from float16 rows (compiled, best screen and selection):")
    for label, rows in (("re-ranked as quotient rows (2 bytes an element)", exact),
                        ("one element off: re-ranked from the float64 rows", off)):
        fit, model = best_time(lambda rows=rows: KNNRegressor(args.k).fit(rows, np.ones(len(rows))))
        seconds, _ = best_time(lambda model=model: model.kneighbors(queries))
        print(f"    {label + ':':50s} search {seconds:6.2f} s (fit {fit:.2f} s)")


if __name__ == "__main__":
    main()
