"""The engine flags of ``percept encode`` and ``percept rate``, and the typed :class:`EngineOptions`."""

from __future__ import annotations

import argparse

from percept.engines.options import ENGINES, EngineOptions
from percept.model.devices import DEVICES


def add_engine_arguments(parser: argparse.ArgumentParser, workers_help: str, device: bool = False) -> None:
    """``--engine``, ``--ray-address``, ``--workers`` (meaning ``workers_help`` locally) and, for rating,
    ``--device``."""
    add = parser.add_argument
    add("--engine", choices=ENGINES, default="local",
        help="where batches run: this machine (default) or a Ray cluster")
    add("--ray-address", metavar="ADDRESS",
        help="Ray cluster to join, e.g. HEAD:6379 (default: $RAY_ADDRESS, else start a "
             "local one; needs --engine ray)")
    add("--workers", type=int, default=None, metavar="N",
        help=f"{workers_help}; with --engine ray: actors (default one per GPU, or one per CPU without GPUs)")
    if device:
        add("--device", choices=DEVICES, default="auto",
            help="score on the CPU (numpy) or a CUDA GPU (torch); default auto: CUDA where present")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    return EngineOptions(args.engine, args.ray_address, args.workers, getattr(args, "device", "auto"))
