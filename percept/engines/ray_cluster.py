"""Joining a Ray cluster: the connection every Ray run holds, and how many actors it plans on which device."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

from percept.errors import PerceptError
from percept.extras import require


def ray_module():
    """The ray module with Ray Data loaded; Ray Data's console logs kept to errors (progress is ours)."""
    ray = require("ray", "ray", "--engine ray")
    require("ray", "ray.data", "--engine ray")
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.ERROR)
    return ray


@contextlib.contextmanager
def session(address: str | None = None, quiet: bool = False):
    """Connect to the cluster at ``address`` (None: ``$RAY_ADDRESS``, else start a local one, never one that a
    ``ray start`` on this machine left behind) unless this process is connected already, and leave afterwards;
    errors a worker raised for the user come back as the one-line PerceptError they are."""
    ray = ray_module()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                     log_to_driver=not quiet, logging_level=logging.WARNING if quiet else logging.INFO)
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
    resources = ray_module().cluster_resources()
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
