"""Encoding and rating throughput of the local engine and of Ray with 1 and 2 CPU workers on this machine.

Each encoding run encodes the same drawn street scenes (640x480 JPEG files) end to end into a fresh
embeddings folder (find, decode, preprocess, encode, write parts and manifest). The Ray runs
share one local cluster, whose start is timed apart; each run includes starting its actors and
loading the model in them. Default model: an untrained ``open_clip:ViT-B-32`` (the cost of the
trained one), which makes the encoding, not the decoding, the work.

Each rating run rates the benchmark's query vectors (float16, 1024 dims, read from their parts by
the workers themselves on Ray) into a Parquet file, against the 20,000-image benchmark model (K=40)
and against a light 500-image one, whose cheap scoring lets the driver's own cost show. Beside the
throughput it gives the CPU time the process running the command (the driver) spends per million
vectors: on Ray the driver only plans the work units and joins their parts, so it spends about the
same small share of a core however fast the workers score.

    python -m benchmarks.bench_engines [--images N] [--model NAME] [--batch-size B] [--vectors N]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_encoding import make_images

DEFAULT_MODEL = "open_clip:ViT-B-32"
#: Vectors each rating run rates.
RATED_VECTORS = 100_000


def encode_once(images: Path, out: Path, model: str, pretrained: str | None, batch_size: int, options) -> float:
    """Images per second of one encode into an empty folder."""
    from percept.engines import encode_images

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    embeddings = encode_images(images, out, model, options, pretrained=pretrained, batch_size=batch_size,
                               quiet=True)
    seconds = time.perf_counter() - start
    assert len(embeddings.names) == len(list(images.iterdir()))
    return len(embeddings.names) / seconds


def rate_once(model, queries: Path, out: Path, options) -> tuple[float, float, float]:
    """(vectors per second, this process's CPU seconds per million vectors, the share of one core it kept
    busy) of one rating run."""
    from percept.engines import rate

    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    summary = rate(model, queries, out, options, quiet=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary.rows / seconds, cpu / summary.rows * 1e6, cpu / seconds


def light_model():
    """A model of 500 random images (K=10): cheap to score, so that what the driver spends shows."""
    import numpy as np

    from percept.categories import CATEGORIES
    from percept.model.io import ExportedModel, ModelSettings

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(500, 1024))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ExportedModel({c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 500) for c in CATEGORIES},
                         ModelSettings(k=10))


def rating(vectors: int) -> None:
    """Rating throughput and the driver's CPU time, locally and on Ray with 1 and 2 workers, against the
    benchmark model and against a light one."""
    import ray

    from benchmarks.bench_rating import export_model, query_embeddings
    from benchmarks.common import SURVEY_DIM, benchmark_survey
    from percept.engines import EngineOptions
    from percept.model.io import load_model

    models = {"the 20,000-image benchmark model (K=40)": load_model(export_model(benchmark_survey())),
              "a light 500-image model (K=10), where scoring is cheap and the driver's share shows": light_model()}
    queries = query_embeddings(seed=4, count=vectors)
    print(f"rating throughput, {vectors:,} float16 vectors x {SURVEY_DIM} dims read from their parts, into Parquet, "
          f"{os.cpu_count()} cores; driver CPU: the CPU time of the process running the command, per million vectors")
    with tempfile.TemporaryDirectory(prefix="percept-bench-rating-") as scratch:
        out = Path(scratch) / "rated.parquet"
        for name, model in models.items():
            print(f"  against {name}:")
            local, local_cpu, _ = rate_once(model, queries, out, EngineOptions(device="cpu"))
            print(f"    local engine (all cores): {local:10,.0f} vectors/s, {local_cpu:7.2f} CPU s per million "
                  "vectors (all the work)")
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            try:
                rates = {}
                for workers in (1, 2):
                    rates[workers], cpu, busy = rate_once(model, queries, out,
                                                          EngineOptions("ray", workers=workers, device="cpu"))
                    print(f"    Ray, {workers} CPU worker{'s' * (workers > 1)}:{' ' * (workers == 1)}      "
                          f"{rates[workers]:10,.0f} vectors/s, {cpu:7.2f} driver CPU s per million vectors "
                          f"(the driver kept {busy:.0%} of a core busy; {rates[workers] / local:.2f} x local)")
            finally:
                ray.shutdown()
            print(f"    scaling, Ray 2 workers / 1 worker: {rates[2] / rates[1]:.2f} x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--pretrained", default="random", help="weights for non-built-in models")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vectors", type=int, default=RATED_VECTORS, help="vectors each rating run rates")
    args = parser.parse_args([] if argv is None else argv)  # make bench calls main() with its own argv
    import ray

    from percept.engines import EngineOptions

    pretrained = None if args.model.startswith("percept:") else args.pretrained
    with tempfile.TemporaryDirectory(prefix="percept-bench-engines-") as scratch:
        images = Path(scratch) / "images"
        images.mkdir()
        make_images(images, args.images)
        print(f"encode throughput, {args.images} JPEG images 640x480, {args.model}"
              f"{f' ({pretrained})' if pretrained else ''}, batch {args.batch_size}, {os.cpu_count()} cores, "
              "end to end into clip-retrieval parts")
        local = encode_once(images, Path(scratch) / "out", args.model, pretrained, args.batch_size, EngineOptions())
        print(f"  local engine:          {local:8.1f} images/s")
        start = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        print(f"  (local Ray cluster started in {time.perf_counter() - start:.1f} s, not counted below)")
        try:
            rates = {}
            for workers in (1, 2):
                rates[workers] = encode_once(images, Path(scratch) / "out", args.model, pretrained, args.batch_size,
                                             EngineOptions("ray", workers=workers))
                print(f"  Ray, {workers} CPU worker{'s' * (workers > 1)}:     {rates[workers]:8.1f} images/s "
                      f"({rates[workers] / local:.2f} x local)")
        finally:
            ray.shutdown()
        print(f"  scaling, Ray 2 workers / 1 worker: {rates[2] / rates[1]:.2f} x")
    rating(args.vectors)


if __name__ == "__main__":
    main(sys.argv[1:])
