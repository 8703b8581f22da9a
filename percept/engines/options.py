"""Where an encoding or rating run's batches run: the typed options every engine takes."""

from __future__ import annotations

from dataclasses import dataclass

from percept.errors import PerceptError

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions:
    """``engine``: ``local`` (this process and its worker processes) or ``ray`` (a Ray cluster).

    ``ray_address``: the cluster to join (None: ``$RAY_ADDRESS``, else a new local one).
    ``workers``: locally, decoding processes (encode) or scoring threads (rate); on Ray, actors
    (default: one per GPU, or one per CPU where the cluster has no GPU).
    ``device``: ``auto`` (CUDA where present), ``cpu`` or ``cuda``.
    """

    engine: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    device: str = "auto"

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise PerceptError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.ray_address and self.engine != "ray":
            raise PerceptError("--ray-address joins a Ray cluster: add --engine ray")
        if self.workers is not None and self.workers < (1 if self.engine == "ray" else 0):
            raise PerceptError(f"--workers must be at least {1 if self.engine == 'ray' else 0}, got {self.workers}")
