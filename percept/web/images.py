"""Uploaded and fetched images: decode safely, and find survey images for thumbnails."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from percept.data.images import SUFFIXES

THUMBNAIL_SIZE = 256


class BadImage(Exception):
    """An image that cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode image bytes to RGB, refusing non-images, truncated files and oversized (bomb) images."""
    if not data:
        raise BadImage(400, "the upload is empty: choose an image file")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise BadImage(413, "the image has too many pixels to decode safely") from None
    except UnidentifiedImageError:
        raise BadImage(415, "the upload is not an image format this server can read (use JPEG, PNG or WebP)") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault
        raise BadImage(400, f"cannot read the image: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(413, f"the image is {width} x {height} pixels; at most {max_pixels} pixels are accepted")
    try:
        image.load()
        return image.convert("RGB")
    except Image.DecompressionBombError:
        raise BadImage(413, "the image has too many pixels to decode safely") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise BadImage(400, f"the image is truncated or corrupt ({exc})") from None


def thumbnail_jpeg(path: Path) -> bytes:
    """A small JPEG of an image file."""
    with Image.open(path) as image:
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()


class ImageFolder:
    """Finds survey images by file name inside a folder (searched recursively, once, when first needed)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self._by_name: dict[str, Path] | None = None

    def find(self, name: str) -> Path | None:
        if self._by_name is None:
            self._by_name = {p.name: p for p in sorted(self.root.rglob("*"))
                             if p.is_file() and p.suffix in SUFFIXES}
        return self._by_name.get(Path(str(name).replace("\\", "/")).name)
