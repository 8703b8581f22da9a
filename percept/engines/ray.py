"""The Ray engine: the local engine's stages, run by Ray tasks and actors on a cluster.

Encoding (Ray Data): the image paths become a dataset; with GPUs, Ray tasks decode and
preprocess the images in parallel across the cluster's CPUs and one actor per GPU encodes;
without, ``workers`` CPU actors each read and encode their batches. Every actor loads the
encoder once. Vectors stream back in order to this process, which writes the clip-retrieval
parts and manifest exactly as the local engine does (the same function), so finished parts are
skipped when a run is repeated after a lost worker or a killed driver.

Rating: chunks of the embedding parts are scored in parallel by actors that each hold the
model once (on a GPU where the cluster has them); this process reads and writes as locally.

Images, weights and embeddings are read by path: on a cluster they must lie on storage every
node sees at the same path.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from percept.city import rating
from percept.encoders import pipeline
from percept.encoders.stages import encode_readable, pixel_shape, read_image, stack_readable
from percept.engines.options import EngineOptions
from percept.errors import PerceptError
from percept.extras import require
from percept.model.estimates import interval_level
from percept.model.io import ExportedModel

#: Images each read task decodes at once (GPU clusters).
READ_BATCH = 32
#: At most this many dataset blocks: bounds the driver's bookkeeping for tens of millions of images.
MAX_BLOCKS = 2000
#: Chunks waiting for or being scored per rating actor.
IN_FLIGHT = 2


def _ray():
    """The ray module with Ray Data loaded; Ray Data's console logs kept to errors (progress is ours)."""
    ray = require("ray", "ray", "--engine ray")
    require("ray", "ray.data", "--engine ray")
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.ERROR)
    return ray


@contextlib.contextmanager
def session(address: str | None = None, quiet: bool = False):
    """Connect to the cluster at ``address`` (None: ``$RAY_ADDRESS``, else start a local one) unless this
    process is connected already, and leave afterwards; errors a worker raised for the user come back
    as the one-line PerceptError they are."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=not quiet,
                     logging_level=logging.WARNING if quiet else logging.INFO)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"the Ray cluster at {address}" if address else "a Ray cluster"
            raise PerceptError(f"cannot connect to {where} ({exc}): start one with 'ray start --head', or "
                               "leave out --ray-address to run on a local one") from None
    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, PerceptError):
            raise exc.cause from None
        raise
    finally:
        if started:
            ray.shutdown()


@dataclass(frozen=True)
class Actors:
    """How many actors run, on which device, and whether they read their images themselves."""

    count: int
    device: str  # "cpu" or "cuda"
    read_in_actor: bool

    @property
    def resources(self) -> dict:
        return {"num_cpus": 1, "num_gpus": 1 if self.device == "cuda" else 0}

    def describe(self) -> str:
        return f"{self.count} {'GPU' if self.device == 'cuda' else 'CPU'} worker{'s' * (self.count != 1)}"


def plan_actors(workers: int | None, device: str = "auto") -> Actors:
    """One actor per GPU of the cluster (``auto`` or ``cuda``), else ``workers`` CPU actors
    (default: one per CPU); never more than the cluster holds."""
    resources = _ray().cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device not in ("auto", "cpu", "cuda"):
        raise PerceptError(f"--device must be one of auto, cpu, cuda, got {device!r}")
    if device == "cuda" and not gpus:
        raise PerceptError("--device cuda: the Ray cluster has no GPU: use --device cpu or auto")
    on_gpu = device == "cuda" or (device == "auto" and gpus > 0)
    have, unit = (gpus, "GPUs") if on_gpu else (cpus, "CPUs")
    count = workers or have
    if count > have:
        raise PerceptError(f"--workers {count}: the Ray cluster has {have} {unit}: give at most {have}")
    return Actors(count, "cuda" if on_gpu else "cpu", read_in_actor=not on_gpu)


# --------------------------------------------------------------------------- encoding


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
    ray = _ray()
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


# --------------------------------------------------------------------------- rating


class EstimateChunks:
    """Ray actor holding one estimator: the model is loaded once, then chunk after chunk is scored
    exactly as :func:`percept.city.rating.estimate_chunk` scores it locally."""

    def __init__(self, model: ExportedModel, k: int | None, average_panoramic: bool, include_self: bool,
                 device: str, interval: float | None):
        self.estimator = rating.make_estimator(model, k, average_panoramic, device, threads=1, interval=interval)
        self.include_self = include_self

    def estimate(self, chunk: rating.Chunk):
        return rating.estimate_chunk(self.estimator, chunk, self.include_self)


def chunk_estimator(model: ExportedModel, k: int | None, average_panoramic: bool, include_self: bool,
                    actors: Actors, interval: float | None = None) -> rating.ChunkEstimator:
    """Estimate chunks on ``actors``, at most :data:`IN_FLIGHT` per actor at a time, results in order."""

    def estimate(chunks):
        ray = _ray()
        remote = ray.remote(EstimateChunks).options(max_restarts=3, max_task_retries=3, **actors.resources)
        shared = ray.put(model)
        workers = [remote.remote(shared, k, average_panoramic, include_self, actors.device, interval)
                   for _ in range(actors.count)]
        pending = deque()
        try:
            for number, chunk in enumerate(chunks):
                pending.append((chunk, workers[number % len(workers)].estimate.remote(chunk)))
                if len(pending) > IN_FLIGHT * len(workers):
                    done, ref = pending.popleft()
                    yield done, ray.get(ref)
            while pending:
                done, ref = pending.popleft()
                yield done, ray.get(ref)
        finally:
            for worker in workers:
                ray.kill(worker)

    return estimate


def rate(model: ExportedModel, embeddings_dir, out, options: EngineOptions, *, k: int | None = None,
         average_panoramic: bool = False, include_self: bool = False, interval: float | None = None,
         quiet: bool = False, **rating_options):
    """:func:`percept.city.rating.rate` with the chunks scored by Ray actors."""
    interval_level(model, interval)  # a level the model cannot give fails here, not on the workers
    with session(options.ray_address, quiet):
        actors = plan_actors(options.workers, options.device)
        estimate = chunk_estimator(model, k, average_panoramic, include_self, actors, interval)
        return rating.rate(model, embeddings_dir, out, k=k, average_panoramic=average_panoramic,
                           include_self=include_self, estimate_chunks=estimate, quiet=quiet, **rating_options)
