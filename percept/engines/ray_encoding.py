"""Encoding on Ray (Ray Data): the image paths become a dataset; with GPUs, Ray tasks decode and
preprocess the images in parallel across the cluster's CPUs (8-bit pixels, normalised on the GPU; the
driver builds the model's transform from its settings, without its weights) and one actor per GPU encodes;
without, ``workers`` CPU actors each read and encode their batches. Every actor loads the
encoder once. Vectors stream back in order to this process, which writes the clip-retrieval
parts and manifest exactly as the local engine does (the same function), so finished parts are
skipped when a run is repeated after a lost worker or a killed driver, and images a worker cannot
reach fail the run as they do locally.

A worker resolves a relative path against its own node's folder: every path is made absolute here
first, and every node must see the images and weights before any work starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from percept.encoders import pipeline
from percept.encoders.open_clip_backend import RANDOM
from percept.encoders.pixels import PixelTransform
from percept.encoders.stages import Unreachable, encode_readable, pixel_shape, read_image, stack_readable
from percept.engines.options import EngineOptions
from percept.engines.ray_cluster import Actors, plan_actors, ray_module, session
from percept.engines.ray_paths import absolute, require_visible

#: Images each read task decodes at once (GPU clusters).
READ_BATCH = 32
#: At most this many dataset blocks: bounds the driver's bookkeeping for tens of millions of images.
MAX_BLOCKS = 2000


def failure_columns(reasons: list[str | None]) -> dict:
    """Why each image was not read, as columns a Ray dataset carries: the reason ("" where read) and whether
    the file could not be reached (:class:`~percept.encoders.stages.Unreachable`)."""
    return {"reason": np.array([reason or "" for reason in reasons], dtype=object),
            "unreached": np.array([isinstance(reason, Unreachable) for reason in reasons], dtype=bool)}


def failure_of(reason: str, unreached: bool) -> str | None:
    """The reason :func:`failure_columns` stored (None where the image was read)."""
    return None if not reason else Unreachable(reason) if unreached else str(reason)


def pixel_dtype(transform):
    """The dtype of the pixels ``transform`` makes: 8-bit for the CLIP models (which normalise them on their
    device; a quarter of float32's bytes to ship), float32 for the built-in ones."""
    return np.uint8 if isinstance(transform, PixelTransform) else np.float32


def read_pixels(batch: dict, transform, shape: tuple[int, ...]) -> dict:
    """Ray task: decode and preprocess a batch of images (zeros and a reason where one cannot be read), in
    :func:`pixel_dtype`."""
    pixels = np.zeros((len(batch["path"]), *shape), dtype=pixel_dtype(transform))
    reasons = []
    for row, path in enumerate(batch["path"]):
        tensor, reason = read_image(path, transform)
        if tensor is not None:
            pixels[row] = tensor.numpy()
        reasons.append(reason)
    return {"position": batch["position"], "pixels": pixels, **failure_columns(reasons)}


class EncodeBatches:
    """Ray actor: loads the encoder once, then encodes batch after batch; it reads the images itself
    (``read_in_actor``) or takes the pixels :func:`read_pixels` made."""

    def __init__(self, resolved, device: str, read_in_actor: bool):
        self.encoder = resolved.load(device)
        self.read_in_actor = read_in_actor

    def __call__(self, batch: dict) -> dict:
        positions = [int(p) for p in batch["position"]]
        if self.read_in_actor:
            items = [(p, *read_image(path, self.encoder.transform)) for p, path in zip(positions, batch["path"])]
            done, stacked, failed = stack_readable(items)
        else:
            import torch

            readable = batch["reason"] == ""
            done = [p for p, ok in zip(positions, readable) if ok]
            stacked = torch.from_numpy(batch["pixels"][readable]) if done else None
            failed = {p: failure_of(r, u) for p, r, u, ok in zip(positions, batch["reason"], batch["unreached"],
                                                                  readable) if not ok}
        vectors = encode_readable(self.encoder, done, stacked)
        blank = np.zeros(self.encoder.dim, dtype=np.float32)
        return {"position": np.array(positions, dtype=np.int64),
                "vector": np.stack([vectors.get(p, blank) for p in positions]),
                **failure_columns([failed.get(p) for p in positions])}


def image_stream(actors: Actors, batch_size: int = 64, quiet: bool = True) -> pipeline.ImageStream:
    """An image stream for :func:`percept.encoders.pipeline.encode_images` that encodes on Ray."""

    def stream(lazy: pipeline.LazyEncoder, paths: list[Path]):
        return _encoded_rows(lazy, paths, actors, batch_size, quiet)

    return stream


def _encoded_rows(lazy: pipeline.LazyEncoder, paths: list[Path], actors: Actors, batch_size: int, quiet: bool):
    """Yield (vector, None) or (None, reason) for each path, in order, as Ray's actors deliver them."""
    if not paths:
        return
    ray = ray_module()
    import pyarrow as pa
    from tqdm import tqdm

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    rows = batch_size * -(-len(paths) // (batch_size * MAX_BLOCKS))
    blocks = [pa.table({"position": np.arange(start, min(start + rows, len(paths)), dtype=np.int64),
                        "path": [str(p) for p in paths[start:start + rows]]})
              for start in range(0, len(paths), rows)]
    data = ray.data.from_arrow(blocks)
    if not actors.read_in_actor:
        transform = lazy.resolved.load_transform()  # the model's settings only: no weights on the driver
        data = data.map_batches(read_pixels, fn_args=(transform, pixel_shape(transform)), batch_size=READ_BATCH,
                                batch_format="numpy", num_cpus=1)
    # One batch at a time per actor, handed out in order: vectors come back in order anyway, and a slow
    # image then holds back only the batches after it, so parts are written as early as they can be.
    pool = ray.data.ActorPoolStrategy(size=actors.count, max_tasks_in_flight_per_actor=1)
    data = data.map_batches(EncodeBatches, fn_constructor_args=(lazy.resolved, actors.device, actors.read_in_actor),
                            batch_size=batch_size, batch_format="numpy", compute=pool, **actors.resources)
    expected = 0
    with tqdm(total=len(paths), unit="img", desc=f"encoding with {lazy.resolved.name} on Ray "
              f"({actors.describe()})", disable=quiet, file=sys.stderr) as bar:
        # Each block as soon as it arrives (prefetching would hold one back until the next is in).
        for batch in data.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            for position, vector, reason, unreached in zip(batch["position"], batch["vector"], batch["reason"],
                                                           batch["unreached"]):
                if position != expected:
                    raise RuntimeError(f"Ray delivered image {position} where {expected} was due")
                expected += 1
                yield (None, failure_of(reason, unreached)) if reason else (vector, None)
            bar.update(len(batch["position"]))


def encode_images(images_dir, out_dir, model_name: str, options: EngineOptions, *, batch_size: int = 64,
                  quiet: bool = False, **encoding):
    """:func:`percept.encoders.pipeline.encode_images` with the images encoded on Ray: the paths made absolute
    here, and checked on every node before any work starts."""
    images_dir, out_dir = absolute(images_dir), absolute(out_dir)
    if encoding.get("pretrained") not in (None, RANDOM):
        encoding["pretrained"] = str(absolute(encoding["pretrained"]))
    with session(options.ray_address, quiet):
        require_visible(read_by_workers(images_dir, encoding.get("pretrained")))
        stream = image_stream(plan_actors(options.workers, options.device), batch_size, quiet)
        return pipeline.encode_images(images_dir, out_dir, model_name, batch_size=batch_size, quiet=quiet,
                                      stream=stream, **encoding)


def read_by_workers(images_dir: Path, pretrained: str | None) -> dict[str, str | Path]:
    """The paths the workers read (the images folder, ``--pretrained`` weights) that this machine sees; one it
    does not see fails here with its own message."""
    named: dict[str, str | Path] = {"images folder": images_dir}
    if pretrained not in (None, RANDOM):
        named["weights"] = Path(pretrained)
    return {what: path for what, path in named.items() if Path(path).exists()}
