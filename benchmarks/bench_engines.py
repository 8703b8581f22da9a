"""Encoding throughput of the local engine and of Ray with 1 and 2 CPU workers on this machine.

Each run encodes the same drawn street scenes (640x480 JPEG files) end to end into a fresh
embeddings folder (find, decode, preprocess, encode, write parts and manifest). The Ray runs
share one local cluster, whose start is timed apart; each run includes starting its actors and
loading the model in them. Default model: an untrained ``open_clip:ViT-B-32`` (the cost of the
trained one), which makes the encoding, not the decoding, the work.

    python -m benchmarks.bench_engines [--images N] [--model NAME] [--batch-size B]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_encoding import make_images

DEFAULT_MODEL = "open_clip:ViT-B-32"


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--pretrained", default="random", help="weights for non-built-in models")
    parser.add_argument("--batch-size", type=int, default=32)
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


if __name__ == "__main__":
    main(sys.argv[1:])
