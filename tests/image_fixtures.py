"""Images for the decoding tests: hostile headers, EXIF orientation, 16-bit PNGs."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    """A PNG from its IHDR fields and the filtered scanlines (compressed here)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw_rows, 9))
            + png_chunk(b"IEND", b""))


def blank_bilevel_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels: tiny on disk, huge decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    parts, rows_per_piece = [], max(1, (1 << 20) // len(row))
    for start in range(0, height, rows_per_piece):
        parts.append(compressor.compress(row * min(rows_per_piece, height - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header declares a size and whose pixel data is garbage (decoding it must fail)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"not zlib data")
            + png_chunk(b"IEND", b""))


def street(width: int = 64, height: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth RGB test picture (uint8), different in every corner so rotations matter."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 30, (height, width, 3))
    channels = [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + 2 * y) % 256]
    return np.clip(np.stack(channels, axis=-1) * 0.85 + noise, 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def exif_rotated_jpeg(pixels: np.ndarray, orientation: int = 6) -> bytes:
    """A JPEG of ``pixels`` stored as they are, with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(Image.fromarray(pixels), "JPEG", quality=92, exif=exif)


def upright_png_of_jpeg(jpeg: bytes) -> bytes:
    """A lossless PNG of the JPEG's decoded pixels turned as its EXIF orientation says (by hand)."""
    with Image.open(io.BytesIO(jpeg)) as image:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        pixels = np.asarray(image.convert("RGB"))
    turned = {1: pixels, 3: np.rot90(pixels, 2), 6: np.rot90(pixels, -1), 8: np.rot90(pixels, 1)}[orientation]
    return encode(Image.fromarray(np.ascontiguousarray(turned)), "PNG")


def sixteen_bit_grey_png(grey: np.ndarray) -> bytes:
    """A 16-bit greyscale PNG holding ``grey`` (uint8) scaled by 257, so that 255 -> 65535."""
    return encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG")


def sixteen_bit_rgb_png(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (written by hand: Pillow cannot) holding ``pixels`` (uint8) scaled by 257."""
    height, width, _ = pixels.shape
    wide = (pixels.astype(">u2") * 257).reshape(height, width * 3)
    rows = b"".join(b"\x00" + row.tobytes() for row in wide)
    return png(width, height, 16, 2, rows)
