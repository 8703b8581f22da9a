"""CLIP back ends behind one interface: built-in offline models, open_clip (including OpenAI's
weights), Hugging Face CLIP, and the external ``clip-retrieval`` command (:mod:`.external`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from percept.encoders.base import Encoder

__all__ = ["Encoder", "ModelName", "ResolvedModel", "encode_pil_images", "load_encoder", "parse_model_name",
           "resolve_model"]

#: Names imported on first use, so that reading embeddings never loads the encoder machinery.
_LAZY = {"Encoder": "base", "ModelName": "registry", "ResolvedModel": "registry",
         "parse_model_name": "registry", "resolve_model": "registry"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"percept.encoders.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'percept.encoders' has no attribute {name!r}")


def load_encoder(name: str, pretrained: str | None = None, device: str | None = None, precision: str = "auto",
                  runtime: str = "torch") -> Encoder:
    """Build the encoder for a model name (weights from local files only; CUDA when present) in ``precision``
    on ``runtime`` (:mod:`percept.encoders.precision`). The default runtime, eager torch, starts at once,
    as a few images want; the encoding pipeline takes OpenVINO on the CPU where it is installed."""
    from percept.encoders.registry import resolve_model

    return resolve_model(name, pretrained, precision, runtime, device).load(device)


def encode_pil_images(encoder: Encoder, images: list) -> np.ndarray:
    """(n, dim) float32 unit rows for PIL images already in memory."""
    import numpy as np

    if not images:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    import torch

    return encoder.encode_image_batch(torch.stack([encoder.preprocess(image) for image in images]))
