"""Survey images for the Image Demo's thumbnails: find them by name, and shrink them."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from percept.data.images import SUFFIXES

THUMBNAIL_SIZE = 256


def thumbnail_jpeg(image: Image.Image) -> bytes:
    """A small JPEG of a decoded image (shrunk in place)."""
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
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
