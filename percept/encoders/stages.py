"""The stages every engine runs on images: read one image, stack a batch, encode it.

The local engine runs them in DataLoader workers and the main process; the Ray engine in
Ray tasks and actors. Because both call these same functions, both give the same vectors.

Decoding at the size needed: a transform with a ``draft_size`` (the smallest side its resize
needs) has JPEG files decoded by libjpeg at the smallest of the scales 1/8, 1/4, 1/2 and 1 that
keeps both sides at or above it; the model's own resize and crop then run on a quarter or less
of the pixels (a 640x480 photograph for a 224-pixel model: 320x240).

Two kinds of failure: a file that was read but cannot be decoded is *unreadable*, a verdict on the
file itself; a file the operating system could not hand over (absent, a folder on its path gone, no
permission, an I/O error) *cannot be reached*, a fault of where it is stored, never of the file
(:class:`Unreachable`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from percept.data.decode import ImageError, open_image, read_header, to_rgb8
from percept.encoders.base import Encoder

#: Formats whose decoder scales while decoding (Pillow's JPEG plugin, which also reads MPO).
DRAFT_FORMATS = frozenset({"JPEG", "MPO"})


def open_drafted(path: str | Path, draft_size: int | None):
    """:func:`percept.data.decode.open_image` (upright 8-bit RGB, size limits checked before decoding), with
    JPEG files decoded at the smallest scale whose both sides are at least ``draft_size`` (None: full size)."""
    if draft_size is None or read_header(path, name=f"image {path}").format not in DRAFT_FORMATS:
        return open_image(path)
    from PIL import Image, ImageOps

    try:
        with open(path, "rb") as handle:
            image = Image.open(handle, formats=("JPEG",))
            image.draft(image.mode, (draft_size, draft_size))
            image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return to_rgb8(image)
    except Exception as exc:  # noqa: BLE001 - truncated data, bad EXIF: the file's fault, as open_image says
        raise ImageError(f"image {path} is truncated or corrupt ({type(exc).__name__}: {exc}): "
                         "use an intact copy") from None


class Unreachable(str):
    """The reason an image file could not be reached (the operating system refused it: absent, no
    permission, an I/O error): a fault of where it is stored, so it is never kept as the file's verdict."""


def system_error(exc: BaseException) -> OSError | None:
    """The operating system's error (an OSError with an error number) behind ``exc``, if any.

    Decoders report damaged data as exceptions of their own or as OSErrors without a number; reading
    a file that is gone, forbidden or on failing storage raises an OSError with one, which the image
    readers pass on as the context of their own error.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def read_image(path: str | Path, transform):
    """Decode (with :func:`open_drafted`: upright 8-bit RGB, size limits checked first, JPEG files at the
    transform's ``draft_size`` where it has one) and preprocess one image: ``(tensor, None)``, or
    ``(None, reason)`` when it cannot be read; the reason is an :class:`Unreachable` when the file
    could not be reached."""
    try:
        return transform(open_drafted(path, getattr(transform, "draft_size", None))), None
    except Exception as exc:  # noqa: BLE001 - any failure skips the image, never the run
        refused = system_error(exc)
        if refused is not None:
            return None, Unreachable(f"image {path} cannot be reached ({refused.strerror or refused})")
        return None, str(exc) if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"


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
