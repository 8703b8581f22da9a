"""``percept rate`` outside the search: the whole command on 200 query vectors (where the search takes almost no
time) against the 20,000-image benchmark model, and in this process the parts of its start: reading the model file
(its vectors divided back from the quotient rows it holds, or inflated, and checked) and building the scorer
(distinct vectors, the search's screen)."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_rating import export_model
from benchmarks.common import BENCH_DIR, SURVEY_DIM, benchmark_survey, best_seconds, console_script, measure

QUERIES = 200
RUNS = 5
REPEATS = 3


def startup_queries():
    """``QUERIES`` unit float16 vectors in clip-retrieval layout, written once."""
    from percept.data.embeddings import write_part

    folder = BENCH_DIR / f"queries-{QUERIES}x{SURVEY_DIM}"
    if not (folder / "img_emb" / "img_emb_0.npy").exists():
        vectors = np.random.default_rng(5).normal(size=(QUERIES, SURVEY_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        names = [f"q_{i}.jpg" for i in range(QUERIES)]
        write_part(folder, "img", 0, vectors, pd.DataFrame({"image_path": names}))
    return folder


def main() -> None:
    from percept.model.distinct import distinct_rows
    from percept.model.io import load_model
    from percept.model.npz import array_names, read_npz
    from percept.model.quotient_members import ROWS_PREFIX
    from percept.model.scoring import MultiScorer

    model_path = export_model(benchmark_survey())
    queries = startup_queries()
    command = [console_script("percept"), "rate", "--model", model_path, "-e", str(queries),
               "--out", str(BENCH_DIR / "rated-startup.parquet"), "--quiet"]
    walls = [measure(command, BENCH_DIR)[0] for _ in range(RUNS)]
    print(f"  percept rate on {QUERIES} vectors against the 20,000-image model: median "
          f"{statistics.median(walls):.2f} s ({min(walls):.2f}-{max(walls):.2f} s over {RUNS} runs; the search itself "
          "takes a few milliseconds)")
    model = load_model(model_path)
    vectors = [model.vectors[c] for c in model.categories]
    quotients = ROWS_PREFIX + model.categories[0] in array_names(Path(model_path))
    parts = {"inflating every member (as a file without quotient rows is read)":
             best_seconds(lambda: read_npz(Path(model_path)), REPEATS),
             "reading the model (" + ("its vectors divided back from their quotient rows" if quotients else "inflated")
             + ", checked)": best_seconds(lambda: load_model(model_path), REPEATS),
             "distinct vectors of its five categories": best_seconds(lambda: distinct_rows(vectors), REPEATS),
             "building the scorer (distinct vectors and the screen)": best_seconds(lambda: MultiScorer(model), REPEATS)}
    rows, size = sum(len(v) for v in vectors), sum(v.nbytes for v in vectors) / 1e6
    print(f"    in this process (best of {REPEATS}; {rows:,} float64 rows, {size:,.0f} MB of vectors): "
          + "; ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items()))


if __name__ == "__main__":
    main()
