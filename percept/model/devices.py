"""Where scoring runs: ``auto`` (CUDA when present), ``cpu`` (numpy) or ``cuda`` (torch on the GPU)."""

from __future__ import annotations

from percept.errors import PerceptError
from percept.model.io import ExportedModel
from percept.model.scoring import MultiScorer

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device."""
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
