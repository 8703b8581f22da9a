"""Encoding on Ray (Ray Data): the image paths become a dataset; with GPUs, Ray tasks decode and
preprocess the images in parallel across the cluster's CPUs and one actor per GPU encodes;
without, ``workers`` CPU actors each read and encode their batches. Every actor loads the
encoder once. Vectors stream back in order to this process, which writes the clip-retrieval
parts and manifest exactly as the local engine does (the same function), so finished parts are
skipped when a run is repeated after a lost worker or a killed driver.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from percept.encoders import pipeline
from percept.encoders.stages import encode_readable, pixel_shape, read_image, stack_readable
from percept.engines.options import EngineOptions
from percept.engines.ray_cluster import Actors, plan_actors, ray_module, session

#: Images each read task decodes at once (GPU clusters).
READ_BATCH = 32
#: At most this many dataset blocks: bounds the driver's bookkeeping for tens of millions of images.
MAX_BLOCKS = 2000


def read_pixels(batch: dict, transform, shape: tuple[int, ...]) -> dict:
    """Ray task: decode and preprocess a batch of images (zeros and a reason where one cannot be read)."""
    pixels = np.zeros((len(batch["path"]), *shape), dtype=np.float32)
    reasons = []
    for row, path in enumerate(batch["path"]):
        tensor, reason = read_image(path, transform)
        if tensor is not None:
            pixels[row] = tensor.numpy()
        reasons.append(reason or "")
    return {"position": batch["position"], "pixels": pixels, "reason": np.array(reasons, dtype=object)}


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
            failed = {p: str(r) for p, r, ok in zip(positions, batch["reason"], readable) if not ok}
        vectors = encode_readable(self.encoder, done, stacked)
        blank = np.zeros(self.encoder.dim, dtype=np.float32)
        return {"position": np.array(positions, dtype=np.int64),
                "vector": np.stack([vectors.get(p, blank) for p in positions]),
                "reason": np.array([failed.get(p, "") for p in positions], dtype=object)}


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
        transform = lazy.get().transform
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
            for position, vector, reason in zip(batch["position"], batch["vector"], batch["reason"]):
                if position != expected:
                    raise RuntimeError(f"Ray delivered image {position} where {expected} was due")
                expected += 1
                yield (None, str(reason)) if reason else (vector, None)
            bar.update(len(batch["position"]))


def encode_images(images_dir, out_dir, model_name: str, options: EngineOptions, *, batch_size: int = 64,
                  quiet: bool = False, **encoding):
    """:func:`percept.encoders.pipeline.encode_images` with the images encoded on Ray."""
    with session(options.ray_address, quiet):
        stream = image_stream(plan_actors(options.workers, options.device), batch_size, quiet)
        return pipeline.encode_images(images_dir, out_dir, model_name, batch_size=batch_size, quiet=quiet,
                                      stream=stream, **encoding)
