"""Rating on Ray: chunks of the embedding parts are scored in parallel by actors that each hold the
model once (on a GPU where the cluster has them); this process reads and writes as locally."""

from __future__ import annotations

from collections import deque

from percept.city import rating
from percept.engines.options import EngineOptions
from percept.engines.ray_cluster import Actors, plan_actors, ray_module, session
from percept.model.estimates import interval_level
from percept.model.io import ExportedModel

#: Chunks waiting for or being scored per rating actor.
IN_FLIGHT = 2


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
        ray = ray_module()
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
