"""The interface every encoder back end implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (zero rows stay zero)."""
    out = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (out / norms).astype(np.float32)


class Encoder:
    """A CLIP-style model with an image tower and a text tower sharing one vector space.

    ``transform`` turns a PIL image into the CHW tensor :meth:`encode_image_batch` takes (a float tensor,
    or 8-bit pixels that the model normalises itself: :mod:`percept.encoders.pixels`); it is a picklable
    object so that DataLoader workers can run it. ``precision`` (fp64, fp32, bf16 or fp16) and ``runtime``
    (numpy, torch or openvino) name the arithmetic; caches record them.
    """

    name: str
    weights_id: str
    dim: int
    device: str = "cpu"
    precision: str = "fp32"
    runtime: str = "torch"
    transform: Callable

    def preprocess(self, image) -> torch.Tensor:
        """One PIL image → CHW float tensor ready for :meth:`encode_image_batch`."""
        return self.transform(image)

    def encode_image_batch(self, batch) -> np.ndarray:
        """(n, C, H, W) tensor of :attr:`transform`'s → (n, dim) float32 unit rows."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → (n, dim) float32 unit rows."""
        raise NotImplementedError
