"""The interface every encoder back end implements."""

from __future__ import annotations

from typing import Callable

import numpy as np


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (zero rows stay zero)."""
    out = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (out / norms).astype(np.float32)


class Encoder:
    """A CLIP-style model with an image tower and a text tower sharing one vector space.

    ``transform`` turns a PIL image into a CHW float tensor; it is a picklable object so that
    DataLoader workers can run it. ``dtype`` is the torch dtype batches are cast to.
    """

    name: str
    weights_id: str
    dim: int
    device: str = "cpu"
    transform: Callable

    def preprocess(self, image) -> "torch.Tensor":  # noqa: F821 - torch is imported lazily
        """One PIL image → CHW float tensor ready for :meth:`encode_image_batch`."""
        return self.transform(image)

    def encode_image_batch(self, batch) -> np.ndarray:
        """(n, C, H, W) tensor → (n, dim) float32 unit rows."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → (n, dim) float32 unit rows."""
        raise NotImplementedError
