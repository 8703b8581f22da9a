"""Encoding throughput (images/s) end to end from JPEG files, beside the bfloat16 product limit for the model's
FLOPs measured in the same run: decode (JPEG files at the size the model needs) and preprocess in DataLoader
workers, encode in batches. Default: drawn street scenes (640x480) with the built-in ``percept:tiny``, an
untrained ``open_clip:ViT-B-32`` (the same cost as the trained one) before (float32 on torch, full decoding:
the pipeline as it was) and after (``--precision auto``), and an untrained ``open_clip:ViT-H-14-378-quickgelu``.
Each reduced-precision row gives the smallest cosine of its vectors to float32 ones of the same weights.

    python -m benchmarks.bench_encoding [--images N] [--model NAME ...] [--batch-size B]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.encoding_limits import product_gflops, tower_shape
from percept.synthetic.sample import draw_scene
from percept.synthetic.simulation import SUNNY_SHARE, street_profiles

SIZE = (640, 480)
TARGET_SHARE = 0.5


@dataclass(frozen=True)
class Case:
    """One row: a model in a precision and runtime, with JPEG files drafted or decoded in full."""

    model: str
    precision: str = "auto"
    runtime: str = "auto"
    draft: bool = True
    images: int = 500
    agreement_images: int = 64


DEFAULT_CASES = (
    Case("percept:tiny"),
    Case("open_clip:ViT-B-32", "fp32", "torch", draft=False, images=200),
    Case("open_clip:ViT-B-32"),
    Case("open_clip:ViT-H-14-378-quickgelu", images=48, agreement_images=4),
)


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


def _load(case: Case, pretrained: str | None):
    from percept.encoders.registry import resolve_model

    resolved = resolve_model(case.model, pretrained, case.precision, case.runtime, "cpu")
    encoder = resolved.load("cpu")
    if not case.draft:
        encoder.transform.draft_size = None
    return encoder


def measure(case: Case, pretrained: str | None, paths: list[Path], batch_size: int, workers: int | None) -> dict:
    """Images/s end to end (the model loaded, compiled on a first batch, beforehand), and the limit before and after."""
    import torch
    from PIL import Image

    from percept.encoders.pipeline import encode_image_paths

    start = time.perf_counter()
    encoder = _load(case, pretrained)
    shape = tower_shape(encoder.model.visual) if hasattr(encoder, "model") else None
    encoder.encode_image_batch(torch.stack([encoder.transform(Image.new("RGB", SIZE))] * 2))
    loaded = time.perf_counter()
    limits = [product_gflops(shape, batch_size)] if shape else []
    begun = time.perf_counter()
    vectors, failed = encode_image_paths(encoder, paths, batch_size=batch_size, num_workers=workers)
    seconds = time.perf_counter() - begun
    assert not failed and len(vectors) == len(paths)
    if shape:
        limits.append(product_gflops(shape, batch_size))
    drafted = case.draft and getattr(encoder.transform, "draft_size", None) is not None
    return {"setting": f"{encoder.precision} {encoder.runtime}", "decode": "draft" if drafted else "full",
            "reduced": encoder.precision in ("bf16", "fp16"), "vectors": vectors, "load_s": loaded - start,
            "rate": len(paths) / seconds,
            "limits": [gflops * 1e9 / shape.flops for gflops in limits] if shape else [],
            "gflop": shape.flops / 1e9 if shape else None}


def agreement(case: Case, pretrained: str | None, paths: list[Path], vectors: np.ndarray) -> float:
    """The smallest cosine between the case's vectors and float32 ones (torch) of the same weights and decoding."""
    from percept.encoders.pipeline import encode_image_paths

    reference = _load(Case(case.model, "fp32", "torch", case.draft), pretrained)
    exact, _ = encode_image_paths(reference, paths, num_workers=0)
    return float(np.min(np.sum(exact * vectors[:len(exact)], axis=1)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, help="images per model (default: 500, 200 for the float32 "
                                                   "row, 48 for ViT-H)")
    parser.add_argument("--model", action="append", help="model name, encoded with --precision auto (repeatable; "
                                                        "default: the cases above)")
    parser.add_argument("--pretrained", default="random",
                        help="weights for non-built-in models (default: random initialisation)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    cases = [Case(model) for model in args.model] if args.model else list(DEFAULT_CASES)
    if args.images:
        cases = [Case(c.model, c.precision, c.runtime, c.draft, args.images, c.agreement_images) for c in cases]
    with tempfile.TemporaryDirectory(prefix="percept-bench-") as scratch:
        paths = make_images(Path(scratch), max(c.images for c in cases))
        print(f"encoding throughput, JPEG images {SIZE[0]}x{SIZE[1]}, batch {args.batch_size}, end to end from "
              "files (decode, preprocess, encode); limit: the bfloat16 product of the model's shapes in the same "
              f"run (before-after) for its FLOPs (goal >= {TARGET_SHARE:.0%})")
        print(f"{'model':<34} {'precision':<17} {'decode':<6} {'images':>6} {'load s':>7} {'images/s':>9} "
              f"{'limit':>13} {'share':>9} {'cos vs fp32':>11}")
        for case in cases:
            pretrained = None if case.model.startswith("percept:") else args.pretrained
            row = measure(case, pretrained, paths[:case.images], args.batch_size, args.workers)
            limits = row["limits"]
            digits = 0 if limits and min(limits) >= 10 else 2
            limit = f"{min(limits):.{digits}f}-{max(limits):.{digits}f}" if limits else "-"
            share = f"{row['rate'] / max(limits):.0%}-{row['rate'] / min(limits):.0%}" if limits else "-"
            cosine = "-"
            if row["reduced"]:
                cosine = f"{agreement(case, pretrained, paths[:case.agreement_images], row['vectors']):.5f}"
            print(f"{case.model:<34} {row['setting']:<17} {row['decode']:<6} {case.images:>6} "
                  f"{row['load_s']:>7.1f} {row['rate']:>9.2f} {limit:>13} {share:>9} {cosine:>11}",
                  flush=True)
            if row["gflop"]:
                print(f"  ({row['gflop']:.1f} GFLOP an image)", flush=True)


if __name__ == "__main__":
    main()
