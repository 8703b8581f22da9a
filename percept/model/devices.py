"""Where scoring runs: ``auto`` (CUDA when present), ``cpu`` (numpy) or ``cuda`` (torch on the GPU): the scorer
and the estimator for each."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from percept.errors import PerceptError
from percept.model.estimates import Estimator
from percept.model.io import ExportedModel
from percept.model.scoring import MultiScorer

DEVICES = ("auto", "cpu", "cuda")


#: Where an NVIDIA driver shows itself on Linux; without any of them no CUDA device can be seen.
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (on Linux without an NVIDIA driver, answered without
    importing torch, which takes seconds)."""
    if sys.platform.startswith("linux") and not any(os.path.exists(path) for path in NVIDIA_DRIVER_PATHS):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` or ``cpu``; ``cuda`` (or ``cuda:N``) only where CUDA is present."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise PerceptError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "cpu" and not cuda_available():
        raise PerceptError(f"--device {device}: torch sees no CUDA device on this machine: use --device cpu")
    return device


def make_scorer(model: ExportedModel, k: int | None = None, device: str = "cpu",
                threads: int | None = None, precision: str = "fp16") -> MultiScorer:
    """The scorer for ``device``: numpy on the CPU (``threads`` threads), torch on CUDA with its screen in
    ``precision`` (``fp16``, ``bf16`` or ``fp32``); same neighbours."""
    device = resolve_device(device)
    if device == "cpu":
        return MultiScorer(model, k=k, threads=threads)
    from percept.model.torch_scoring import TorchScorer

    return TorchScorer(model, k=k, device=device, precision=precision)


def make_estimator(model: ExportedModel, k: int | None = None, device: str = "cpu", threads: int | None = None,
                   interval: float | None = None, image_key: Callable[[str], str] = str,
                   precision: str = "fp16") -> Estimator:
    """The estimator for ``device``: on the CPU an :class:`Estimator`; on CUDA a
    :class:`~percept.model.torch_estimates.DeviceEstimator`, which also takes rows as stored
    (``estimate_stored``, ``estimate_chunks``) and computes the statistics on the device."""
    device = resolve_device(device)
    if device == "cpu":
        return Estimator(model, k=k, image_key=image_key, scorer=MultiScorer(model, k=k, threads=threads),
                         interval=interval)
    from percept.model.torch_estimates import DeviceEstimator

    return DeviceEstimator(model, k=k, image_key=image_key, interval=interval, device=device, precision=precision)
