"""The stages every engine runs on images: read one image, stack a batch, encode it.

The local engine runs them in DataLoader workers and the main process; the Ray engine in
Ray tasks and actors. Because both call these same functions, both give the same vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from percept.data.decode import ImageError, open_image
from percept.encoders.base import Encoder


def read_image(path: str | Path, transform):
    """Decode (with :func:`percept.data.decode.open_image`: upright 8-bit RGB, size limits checked
    first) and preprocess one image: ``(tensor, None)``, or ``(None, reason)`` when it cannot be read."""
    try:
        return transform(open_image(path)), None
    except ImageError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - any preprocessing failure skips the image, never the run
        return None, f"{type(exc).__name__}: {exc}"


def stack_readable(items):
    """``(position, tensor or None, reason or None)`` items → (positions read, stacked batch or None,
    ``{position: reason}`` of the unreadable ones)."""
    import torch

    good = [(position, tensor) for position, tensor, _ in items if tensor is not None]
    failed = {position: reason for position, tensor, reason in items if tensor is None}
    batch = torch.stack([tensor for _, tensor in good]) if good else None
    return [position for position, _ in good], batch, failed


def encode_readable(encoder: Encoder, positions: list[int], batch) -> dict[int, np.ndarray]:
    """``{position: float32 unit vector}`` for a stacked batch (empty when nothing was readable)."""
    if batch is None:
        return {}
    return dict(zip(positions, encoder.encode_image_batch(batch)))


def pixel_shape(transform) -> tuple[int, ...]:
    """The shape of the tensors ``transform`` makes (every model crops to a fixed size)."""
    from PIL import Image

    return tuple(transform(Image.new("RGB", (64, 64))).shape)
