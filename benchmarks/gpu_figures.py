"""GPU figures (run by ``benchmarks/gpu.sh``): encoding and rating throughput on one CUDA device.

Encoding: images/s end to end from JPEG files for open_clip ViT-B-32 and ViT-H-14-378-quickgelu with
random weights (the cost of trained ones) at batch 256, through the local engine's feed (DataLoader workers
read the files; on CUDA the JPEG files are decoded on the GPU with nvJPEG, resized and cropped there, the
8-bit pixels normalised by the model, batches prefetched on a second stream) in ``--precision auto``
(float16 on CUDA). Beside each, the limit the device's own matrix products set: the products of the
model's MLP shapes for a batch, timed in the same precision, divided by the FLOPs one image costs
(counted by torch); and the goals (ViT-B-32 >= 3,000 images/s, ViT-H-14-378 >= 60 % of its limit).
Rating: vectors/s of the device estimator (float16 rows as stored, copied ahead and normalised on the device,
the float16 screen, float64 re-ranking, the statistics on the device) for 1,000,000 vectors against a
20,000-image model (the synthetic survey, K=40, 1024 dimensions), beside the rate the device's float16 products
of the screen's shapes alone allow, and the goal (>= 1,000,000 vectors/s); the first 20,000 vectors are also
scored on the CPU (largest score difference, goal <= 1e-9; neighbours compared). Then ``percept rate --device
cuda`` end to end on the same vectors stored as embedding parts.

Everything is generated here (scenes, survey, vectors); nothing is downloaded.

    python -m benchmarks.gpu_figures [--smoke]   # --smoke: tiny sizes, runs on the CPU too (a check of the script)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = ("open_clip:ViT-B-32", "open_clip:ViT-H-14-378-quickgelu")
UNIQUE_SCENES = 1024
SCENES_PER_TASK = 64
CHUNK = 65_536
PART_SIZE = 250_000
CPU_CHECK = 20_000


def _draw(folder: Path, task: int) -> None:
    from benchmarks.bench_encoding import make_images

    drawn = folder / f"task{task}"
    drawn.mkdir()
    for path in make_images(drawn, SCENES_PER_TASK, seed=task):
        path.rename(folder / f"scene_{task:03d}_{path.name}")
    drawn.rmdir()


def make_jpegs(folder: Path, count: int) -> list[Path]:
    """``count`` 640x480 JPEG street scenes: up to 1,024 drawn (in parallel), the rest copies of them."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tasks = -(-min(count, UNIQUE_SCENES) // SCENES_PER_TASK)
    with ProcessPoolExecutor() as pool:
        list(pool.map(_draw, [folder] * tasks, range(tasks)))
    drawn = sorted(folder.glob("scene_*.jpg"))
    for number in range(len(drawn), count):
        shutil.copyfile(drawn[number % len(drawn)], folder / f"copy_{number:07d}.jpg")
    return sorted(folder.glob("*.jpg"))[:count]


#: What each model's encoding should reach on one H100-class GPU: images/s, or a share of its product limit.
ENCODING_GOALS = {"open_clip:ViT-B-32": ("images/s", 3_000.0),
                  "open_clip:ViT-H-14-378-quickgelu": ("share of the limit", 0.60)}


def _per_second(rate: float) -> str:
    """A rate in whole units from 10 up, in two significant digits below (the CPU's smoke runs)."""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def product_gflops(shape, batch: int, device: str, precision: str, repeats: int = 5) -> float:
    """GFLOP/s of ``device``'s products of a batch's MLP shapes (tokens x width by width x 4 width, and back) in
    ``precision``, best of ``repeats`` runs of at least 50 ms each: the most the model's own layers can run at."""
    import torch

    from percept.encoders.precision import torch_dtype

    rows, width = shape.tokens * batch, shape.width
    made = lambda *size: torch.randn(*size, device=device, dtype=torch_dtype(precision))
    a, up, hidden, down = made(rows, width), made(width, 4 * width), made(rows, 4 * width), made(4 * width, width)

    def timed(times: int) -> float:
        _synchronize(device)
        began = time.perf_counter()
        for _ in range(times):
            a @ up, hidden @ down
        _synchronize(device)
        return time.perf_counter() - began

    times = max(1, round(0.05 / timed(1)))  # the first run also warms up
    best = min(timed(times) for _ in range(repeats)) / times
    return 2 * 2 * rows * width * 4 * width / best / 1e9


def encode_throughput(model: str, paths: list[Path], batch_size: int) -> None:
    """Images/s end to end from ``paths`` (after a warm-up), beside the device's product limit and the goal."""
    import torch

    from benchmarks.encoding_limits import tower_shape
    from percept.encoders import load_encoder
    from percept.encoders.device_feed import feed_for
    from percept.encoders.pipeline import default_workers, encode_image_paths

    start = time.perf_counter()
    encoder = load_encoder(model, "random")
    load = time.perf_counter() - start
    encode_image_paths(encoder, paths[:2 * batch_size], batch_size=batch_size)  # warm-up: CUDA kernels, workers
    _synchronize(encoder.device)
    start = time.perf_counter()
    vectors, failed = encode_image_paths(encoder, paths, batch_size=batch_size)
    seconds = time.perf_counter() - start
    assert not failed and len(vectors) == len(paths)
    rate = len(paths) / seconds
    with torch.device(encoder.device):  # the tower's FLOPs counted on an image made on its device
        shape = tower_shape(encoder.model.visual)
    limit = product_gflops(shape, batch_size, encoder.device, encoder.precision) * 1e9 / shape.flops
    print(f"  encode {model:<34} {encoder.device} {encoder.precision} batch {batch_size}, "
          f"{default_workers(len(paths), batch_size)} DataLoader workers, {feed_for(encoder).describe}: "
          f"{len(paths):,} images in {seconds:.1f} s = {_per_second(rate)} images/s (model built in {load:.1f} s)",
          flush=True)
    kind, goal = ENCODING_GOALS[model]
    reached = rate >= (goal if kind == "images/s" else goal * limit)
    wanted = f"{goal:,.0f} images/s" if kind == "images/s" else f"{goal:.0%} of the limit"
    print(f"    limit: {encoder.precision} products of its shapes on the {encoder.device}, "
          f"{shape.flops / 1e9:.1f} GFLOP an image: {_per_second(limit)} images/s, {rate / limit:.0%} of it reached. "
          f"Goal on one H100-class GPU: {wanted} ({'met' if reached else 'not met'} here)", flush=True)


def rating_model(folder: Path, model_images: int, dim: int) -> Path:
    """The synthetic survey exported by the drop-in (K=40, averages), made once."""
    from percept.cli.dropin import main as dropin
    from percept.synthetic.vectors import generate_synthetic_survey

    survey = folder / f"survey-{model_images}x{dim}"
    model = survey / "model-k40.npz"
    if not model.exists():
        shutil.rmtree(survey, ignore_errors=True)
        generate_synthetic_survey(survey, n_images=model_images, dim=dim, ratings_per_image=3.0, seed=0)
        cwd = os.getcwd()
        os.chdir(survey)
        try:
            assert dropin(["-g", "data.geojson", "-e", "embeddings", "-M", "synthetic", "-k", "40", "-q",
                           "--export", str(model)]) == 0
        finally:
            os.chdir(cwd)
    return model


def query_chunks(count: int, dim: int, seed: int = 1):
    """``count`` random unit vectors as float16 (as stored), in chunks of at most CHUNK rows."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, CHUNK):
        rows = rng.standard_normal((min(CHUNK, count - start), dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        yield start, rows.astype(np.float16)


#: What rating should reach on one H100-class GPU, in vectors/s.
RATING_GOAL = 1_000_000


def screen_limit(estimator, device: str, repeats: int = 5) -> tuple[float, float]:
    """Vectors/s (and TFLOP/s) of the device's screen products alone: blocks of random float16 query rows by
    the model's distinct vectors, in the screen's own call, best of ``repeats`` runs of at least 50 ms."""
    import torch

    screen = estimator.scorer.screen
    rows = estimator.scorer.block_rows
    queries = torch.randn(rows, screen.dim, device=device).to(screen.dtype)

    def timed(times: int) -> float:
        _synchronize(device)
        began = time.perf_counter()
        with screen.held():
            for _ in range(times):
                screen.products(queries)
        _synchronize(device)
        return time.perf_counter() - began

    times = max(1, round(0.05 / timed(1)))  # the first run also warms up
    best = min(timed(times) for _ in range(repeats)) / times
    return rows / best, 2 * rows * len(screen.columns) * screen.dim / best / 1e12


def rating_throughput(model_path: Path, count: int, dim: int, device: str, folder: Path, model_images: int) -> None:
    from percept.city.rating import Chunk
    from percept.data.embeddings import write_part
    from percept.model.estimates import Estimator
    from percept.model.io import load_model
    from percept.model.knn import l2_normalise
    from percept.model.scoring import MultiScorer
    from percept.model.torch_estimates import DeviceEstimator

    model = load_model(model_path)
    estimator = DeviceEstimator(model, device=device)
    chunks = []  # made before the clock starts: 2 bytes an element, as read from storage
    for start, rows in query_chunks(count, dim):
        names = [f"q_{i}.jpg" for i in range(start, start + len(rows))]
        chunks.append(Chunk(names, np.ones(len(rows), dtype=np.int64), names, rows))
    list(estimator.estimate_chunks(chunks[:1], include_self=False, stored=True))  # warm-up
    _synchronize(device)
    began = time.perf_counter()
    results = [estimates for _, estimates in estimator.estimate_chunks(chunks, include_self=False, stored=True)]
    seconds = time.perf_counter() - began
    rate = count / seconds
    limit, tflops = screen_limit(estimator, device)
    precision = estimator.scorer.screen.precision.name
    print(f"  rate (device estimator on {device}, {precision} screen): {count:,} float16 vectors x {dim} against "
          f"the {model_images:,}-image model ({estimator.scorer.n_vectors:,} distinct vectors, K=40), statistics "
          f"included: {seconds:.2f} s = {_per_second(rate)} vectors/s", flush=True)
    print(f"    limit: the screen's {precision} products alone ({estimator.scorer.block_rows:,} x {dim} by "
          f"{dim} x {estimator.scorer.n_vectors:,}): {_per_second(limit)} vectors/s ({tflops:.3g} TFLOP/s), "
          f"{rate / limit:.0%} of it reached. Goal on one H100-class GPU: {RATING_GOAL:,} vectors/s "
          f"({'met' if rate >= RATING_GOAL else 'not met'} here)", flush=True)

    first = chunks[0]
    check = min(CPU_CHECK, len(first.names))
    unit = l2_normalise(first.vectors[:check])
    began = time.perf_counter()
    cpu = Estimator(model).estimate(unit, first.names[:check])
    cpu_seconds = time.perf_counter() - began
    same = all(np.array_equal(got.index, want.index) for got, want in
               zip(estimator.scorer.neighbours(unit).values(), MultiScorer(model).neighbours(unit).values()))
    difference = np.abs(cpu.scores - results[0].scores[:check]).max()
    print(f"  rate (numpy estimator on the CPU, first {check:,}): {_per_second(check / cpu_seconds)} vectors/s; "
          f"largest |{device} - CPU| score difference {difference:.2e} (goal <= 1e-9); neighbours "
          f"{'identical' if same else 'DIFFERENT'}", flush=True)

    embeddings = folder / f"queries-{count}x{dim}"
    if not (embeddings / "img_emb" / f"img_emb_{(count - 1) // PART_SIZE}.npy").exists():
        shutil.rmtree(embeddings, ignore_errors=True)
        stacked = np.concatenate([chunk.vectors for chunk in chunks])
        for part, start in enumerate(range(0, count, PART_SIZE)):
            names = [f"q_{i}.jpg" for i in range(start, min(start + PART_SIZE, count))]
            write_part(embeddings, "img", part, stacked[start:start + PART_SIZE], pd.DataFrame({"image_path": names}))
    del chunks, results
    out = folder / "rated.parquet"
    began = time.perf_counter()
    from percept.cli.main import main as percept

    assert percept(["rate", "--model", str(model_path), "-e", str(embeddings), "--out", str(out),
                    "--device", device, "--chunk-size", str(CHUNK), "-q"]) == 0
    seconds = time.perf_counter() - began
    print(f"  percept rate --device {device} end to end (read float16 parts, score, write Parquet): "
          f"{_per_second(count / seconds)} vectors/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; runs without CUDA (checks the script)")
    parser.add_argument("--images", type=int, default=20_480, help="JPEG files for ViT-B-32 (default 20480)")
    parser.add_argument("--images-large", type=int, default=4_096,
                        help="JPEG files for ViT-H-14-378-quickgelu (default 4096)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--model-images", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=1024)
    args = parser.parse_args(argv)
    import torch

    if args.smoke:
        args.images, args.images_large, args.batch_size = 8, 2, 4
        args.vectors, args.model_images, args.dim = 5_000, 2_000, 64
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("error: torch sees no CUDA device here: run benchmarks/gpu.sh on a GPU machine "
              "(or --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    output = Path(os.environ.get("PERCEPT_BENCH_DIR", "bench-output")).resolve()
    folder = output / ("gpu-smoke" if args.smoke else "gpu")
    gpu = torch.cuda.get_device_name(0) if cuda else "no GPU (smoke run on the CPU)"
    print(f"GPU benchmark: {gpu}; torch {torch.__version__}; {os.cpu_count()} CPU cores; data in {folder}", flush=True)
    began = time.perf_counter()
    paths = make_jpegs(folder / "jpeg", max(args.images, args.images_large))
    print(f"  {len(paths):,} JPEG files 640x480 ready ({time.perf_counter() - began:.0f} s)", flush=True)
    for model, count in zip(MODELS, (args.images, args.images_large)):
        encode_throughput(model, paths[:count], args.batch_size)
    began = time.perf_counter()
    model_path = rating_model(folder, args.model_images, args.dim)
    print(f"  {args.model_images:,}-image model ready ({time.perf_counter() - began:.0f} s)", flush=True)
    rating_throughput(model_path, args.vectors, args.dim, device, folder, args.model_images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
