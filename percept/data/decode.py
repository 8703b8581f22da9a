"""Open an image safely: size limits checked on the header before any pixel is decoded, EXIF
orientation applied, and every pixel format turned into 8-bit RGB.

:func:`open_image` is the one way the toolkit reads an image: encoding, ``percept predict``,
uploads and Mapillary thumbnails in the web app, and survey thumbnails.

Pixel formats: 16-bit (``I;16*``, ``I``) is scaled from 0–65535 to 0–255; float (``F``) is
clipped to 0–1 and scaled; images with transparency (``RGBA``, ``LA``, ``PA``, palette with a
transparent colour) are laid on white; CMYK, palette, greyscale and bilevel become RGB.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from percept.errors import PerceptError

#: Formats that are decoded at all (Pillow's other decoders are never tried; JPEG includes MPO).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, TIFF or GIF"
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class ImageLimits:
    """The largest image that is decoded: pixels, longest side, aspect ratio and (optionally) bytes."""

    max_pixels: int = 40_000_000
    max_side: int = 20_000
    max_aspect: float = 20.0
    max_bytes: int | None = None


DEFAULT_LIMITS = ImageLimits()
Source = bytes | bytearray | str | os.PathLike | BinaryIO


class ImageError(PerceptError):
    """An image that cannot be used (truncated, corrupt, empty or missing)."""


class ImageTooLarge(ImageError):
    """More bytes or pixels than the limits allow."""


class ImageUnsupported(ImageError):
    """Not a format that is decoded, or a shape that is refused."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares."""

    format: str | None  # Pillow's name for it
    width: int
    height: int
    mode: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


def check_size(width: int, height: int, limits: ImageLimits, name: str) -> None:
    """Refuse an image whose declared size exceeds ``limits`` (pure: no decoding)."""
    if width < 1 or height < 1:
        raise ImageError(f"{name} declares a size of {width} x {height} pixels: use an intact image")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(f"{name} is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels): at "
                            f"most {limits.max_pixels / 1e6:g} megapixels are read; scale it down first")
    if max(width, height) > limits.max_side:
        raise ImageTooLarge(f"{name} is {width} x {height} pixels: no side may be longer than "
                            f"{limits.max_side} pixels; scale it down first")
    aspect = max(width, height) / min(width, height)
    if aspect > limits.max_aspect:
        raise ImageUnsupported(f"{name} is {width} x {height} pixels, an aspect ratio of {aspect:.0f}:1: at most "
                               f"{limits.max_aspect:g}:1 is read; crop it first")


def check_bytes(size: int, limits: ImageLimits, name: str) -> None:
    """Refuse an empty image or one larger than ``limits.max_bytes``."""
    if size == 0:
        raise ImageError(f"{name} is empty: choose an image file")
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise ImageTooLarge(f"{name} is {size} bytes: at most {limits.max_bytes} bytes "
                            f"({limits.max_bytes / 2**20:g} MB) are read: use a smaller file or raise the limit")


def _far_too_large(name: str, limits: ImageLimits) -> ImageTooLarge:
    """For images Pillow itself refuses to open (more than twice its own pixel limit)."""
    pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return ImageTooLarge(f"{name} declares more than {pillow_limit / 1e6:.0f} megapixels: at most "
                         f"{limits.max_pixels / 1e6:g} megapixels are read; scale it down first")


def _source(source: Source, limits: ImageLimits, name: str) -> BinaryIO:
    """A file object for ``source`` after the byte checks."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        check_bytes(len(source), limits, name)
        return io.BytesIO(source)
    if not isinstance(source, (str, os.PathLike)):  # a file object
        check_bytes(source.seek(0, io.SEEK_END), limits, name)
        source.seek(0)
        return source
    try:
        check_bytes(os.stat(source).st_size, limits, name)
        return open(source, "rb")
    except FileNotFoundError:
        raise ImageError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"{name} is a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"cannot open {name}: {exc.strerror or exc}") from None


def _open(handle: BinaryIO, limits: ImageLimits, name: str) -> Image.Image:
    """Open (parse the header only) and check the declared size."""
    try:
        image = Image.open(handle, formats=FORMATS)
    except Image.DecompressionBombError:
        raise _far_too_large(name, limits) from None
    except UnidentifiedImageError:
        raise ImageUnsupported(f"{name} is not an image this tool reads (use {FORMAT_NAMES})") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is the file's fault
        raise ImageError(f"{name} is truncated or corrupt ({type(exc).__name__}: {exc}): use an intact copy") from None
    try:
        check_size(*image.size, limits, name)
    except ImageError:
        image.close()
        raise
    return image


def read_header(source: Source, limits: ImageLimits = DEFAULT_LIMITS,
                name: str = "the image") -> ImageHeader:
    """The header of an image, refused (without decoding a pixel) when it breaks ``limits``."""
    handle = _source(source, limits, name)
    with handle, _open(handle, limits, name) as image:
        return ImageHeader(image.format, image.width, image.height, image.mode)


def open_image(source: Source, limits: ImageLimits = DEFAULT_LIMITS,
               name: str | None = None) -> Image.Image:
    """Decode an image (bytes, a file path or a seekable binary file, which is closed) into an upright
    8-bit RGB image.

    The header is checked against ``limits`` first; nothing is decoded for an image that breaks
    them. Raises :class:`ImageTooLarge`, :class:`ImageUnsupported` or :class:`ImageError`.
    """
    label = name or (f"image {source}" if isinstance(source, (str, os.PathLike)) else "the image")
    with _source(source, limits, label) as handle:
        image = _open(handle, limits, label)
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return to_rgb8(image)
        except Image.DecompressionBombError:
            raise _far_too_large(label, limits) from None
        except Exception as exc:  # noqa: BLE001 - truncated data, bad EXIF, odd modes: the file's fault
            image.close()
            raise ImageError(f"{label} is truncated or corrupt ({type(exc).__name__}: {exc}): "
                             "use an intact copy") from None


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB for any decoded image (the image itself when it already is)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if mode == "I":
            values = np.clip(values, 0, 65535)
        return Image.fromarray(((values.astype(np.uint32) + 128) // 257).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return Image.fromarray(np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8), "L").convert("RGB")
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return image.convert("RGB")
