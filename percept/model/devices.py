"""Where scoring runs: ``auto`` (CUDA when present), ``cpu`` (numpy) or ``cuda`` (torch on the GPU)."""

from __future__ import annotations

import os
import sys

from percept.errors import PerceptError
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
                threads: int | None = None) -> MultiScorer:
    """The scorer for ``device``: numpy on the CPU (``threads`` threads), torch on CUDA; same neighbours."""
    device = resolve_device(device)
    if device == "cpu":
        return MultiScorer(model, k=k, threads=threads)
    from percept.model.torch_scoring import TorchScorer

    return TorchScorer(model, k=k, device=device)
