"""Encoding throughput (images/s) end to end from JPEG files: decode and preprocess in DataLoader
workers, encode in batches. Default: 500 drawn street scenes (640x480) with the built-in
``percept:tiny`` and an untrained ``open_clip:ViT-B-32`` (same cost as the trained one).

    python -m benchmarks.bench_encoding [--images N] [--model NAME ...] [--batch-size B]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from percept.synthetic.sample import draw_scene
from percept.synthetic.simulation import SUNNY_SHARE, street_profiles

DEFAULT_MODELS = ("percept:tiny", "open_clip:ViT-B-32")
SIZE = (640, 480)


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` sample street scenes (the sample survey's drawings), saved as 640x480 JPEG files."""
    rng = np.random.default_rng(seed)
    profiles = street_profiles(count, rng)
    paths = []
    for index, profile in enumerate(profiles):
        image, _ = draw_scene(profile, bool(rng.random() < SUNNY_SHARE), rng)
        path = folder / f"scene_{index:05d}.jpg"
        image.resize(SIZE).save(path, quality=90)
        paths.append(path)
    return paths


def measure(model: str, pretrained: str | None, paths: list[Path], batch_size: int, workers: int | None) -> dict:
    import torch.utils.data  # noqa: F401 - a one-time import, not part of the throughput

    from percept.encoders import load_encoder
    from percept.encoders.pipeline import encode_image_paths

    start = time.perf_counter()
    encoder = load_encoder(model, pretrained)
    loaded = time.perf_counter()
    vectors, failed = encode_image_paths(encoder, paths, batch_size=batch_size, num_workers=workers)
    done = time.perf_counter()
    assert not failed and len(vectors) == len(paths)
    precision = "float16" if "cuda" in encoder.device else "float32"
    return {"model": model + (f" ({pretrained})" if pretrained else ""), "device": f"{encoder.device} {precision}",
            "load_s": loaded - start, "encode_s": done - loaded, "rate": len(paths) / (done - loaded)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--model", action="append",
                        help=f"model name (repeatable; default {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--pretrained", default="random",
                        help="weights for non-built-in models (default: random initialisation)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="percept-bench-") as scratch:
        paths = make_images(Path(scratch), args.images)
        print(f"encoding throughput, {args.images} JPEG images {SIZE[0]}x{SIZE[1]}, batch {args.batch_size}, "
              "end to end from files (decode, preprocess, encode)")
        print(f"{'model':<36} {'device':<16} {'load s':>7} {'encode s':>9} {'images/s':>9}")
        for model in args.model or DEFAULT_MODELS:
            pretrained = None if model.startswith("percept:") else args.pretrained
            row = measure(model, pretrained, paths, args.batch_size, args.workers)
            print(f"{row['model']:<36} {row['device']:<16} {row['load_s']:>7.1f} {row['encode_s']:>9.1f} "
                  f"{row['rate']:>9.1f}")


if __name__ == "__main__":
    main()
