"""GPU figures (run by ``benchmarks/gpu.sh``): encoding and rating throughput on one CUDA device.

Encoding: images/s end to end from JPEG files (decode and preprocess in DataLoader workers, encode
in half precision) for open_clip ViT-B-32 and ViT-H-14-378-quickgelu with random weights (the cost
of trained ones) at batch 256. Rating: vectors/s of the torch scorer for 1,000,000 unit vectors
against a 20,000-image model (the synthetic survey, K=40, 1024 dimensions), then ``percept rate
--device cuda`` end to end on the same vectors stored as embedding parts; the first 20,000
vectors are also scored on the CPU and the largest score difference printed (goal <= 1e-5).

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


def encode_throughput(model: str, paths: list[Path], batch_size: int) -> None:
    import torch

    from percept.encoders import load_encoder
    from percept.encoders.pipeline import default_workers, encode_image_paths

    start = time.perf_counter()
    encoder = load_encoder(model, "random")
    load = time.perf_counter() - start
    encode_image_paths(encoder, paths[:2 * batch_size], batch_size=batch_size)  # warm-up: CUDA kernels, workers
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    vectors, failed = encode_image_paths(encoder, paths, batch_size=batch_size)
    seconds = time.perf_counter() - start
    assert not failed and len(vectors) == len(paths)
    precision = str(getattr(encoder, "dtype", "float32")).replace("torch.", "")
    print(f"  encode {model:<34} {encoder.device} {precision:<8} batch {batch_size}, "
          f"{default_workers(len(paths), batch_size)} decoding workers: {len(paths):,} images in {seconds:.1f} s = "
          f"{len(paths) / seconds:,.0f} images/s (model built in {load:.1f} s)", flush=True)


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


def rating_throughput(model_path: Path, count: int, dim: int, device: str, folder: Path, model_images: int) -> None:
    import torch

    from percept.data.embeddings import write_part
    from percept.model.io import load_model
    from percept.model.knn import l2_normalise
    from percept.model.scoring import MultiScorer
    from percept.model.torch_scoring import TorchScorer

    model = load_model(model_path)
    scorer = TorchScorer(model, device=device)
    scorer.predict(l2_normalise(next(query_chunks(CHUNK, dim, seed=9))[1]))  # warm-up
    seconds, first = 0.0, None
    for _, rows in query_chunks(count, dim):
        queries = l2_normalise(rows)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        began = time.perf_counter()
        scores = scorer.predict(queries)
        seconds += time.perf_counter() - began
        if first is None:
            first = (queries[:CPU_CHECK], scores[:CPU_CHECK])
    print(f"  rate (torch scorer on {device}): {count:,} vectors x {dim} against the {model_images:,}-image model "
          f"(K=40): {seconds:.1f} s = {count / seconds:,.0f} vectors/s", flush=True)
    began = time.perf_counter()
    cpu = MultiScorer(model).predict(first[0])
    cpu_seconds = time.perf_counter() - began
    print(f"  rate (numpy scorer on the CPU, first {len(cpu):,}): {len(cpu) / cpu_seconds:,.0f} vectors/s; "
          f"largest |{device} - CPU| score difference {np.abs(cpu - first[1]).max():.2e} (goal <= 1e-5)", flush=True)

    embeddings = folder / f"queries-{count}x{dim}"
    if not (embeddings / "img_emb" / f"img_emb_{(count - 1) // PART_SIZE}.npy").exists():
        shutil.rmtree(embeddings, ignore_errors=True)
        rows = [r for _, r in query_chunks(count, dim)]
        stacked = np.concatenate(rows)
        for part, start in enumerate(range(0, count, PART_SIZE)):
            names = [f"q_{i}.jpg" for i in range(start, min(start + PART_SIZE, count))]
            write_part(embeddings, "img", part, stacked[start:start + PART_SIZE], pd.DataFrame({"image_path": names}))
    out = folder / "rated.parquet"
    began = time.perf_counter()
    from percept.cli.main import main as percept

    assert percept(["rate", "--model", str(model_path), "-e", str(embeddings), "--out", str(out),
                    "--device", device, "--chunk-size", str(CHUNK), "-q"]) == 0
    seconds = time.perf_counter() - began
    print(f"  percept rate --device {device} end to end (read float16 parts, score, write Parquet): "
          f"{count / seconds:,.0f} vectors/s", flush=True)


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
