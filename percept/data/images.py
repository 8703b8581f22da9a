"""Find the images of a folder the way clip-retrieval's file reader does.

Extensions ``png jpg jpeg bmp webp``, all lower case or all upper case, at any depth; each
image's key is its path relative to the folder (POSIX separators) and images come in sorted
key order. The ``image_path`` clip-retrieval records is the folder joined with the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from percept.errors import PerceptError

EXTENSIONS = ("png", "jpg", "jpeg", "bmp", "webp")
SUFFIXES = frozenset("." + ext for ext in EXTENSIONS) | frozenset("." + ext.upper() for ext in EXTENSIONS)


@dataclass(frozen=True)
class ImageFile:
    """One image: key (relative POSIX path), path as clip-retrieval names it, size and mtime."""

    key: str
    path: Path
    size: int
    mtime_ns: int


def find_images(folder: str | os.PathLike) -> list[ImageFile]:
    """Every image under ``folder`` (following links), in clip-retrieval's key order."""
    root = Path(folder)
    if not root.is_dir():
        raise PerceptError(f"image folder {root} does not exist or is not a folder")
    found = []
    for directory, _, names in os.walk(root, followlinks=True):
        for name in names:
            if os.path.splitext(name)[1] not in SUFFIXES:
                continue
            path = Path(directory) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append(ImageFile(path.relative_to(root).as_posix(), path, stat.st_size, stat.st_mtime_ns))
    return sorted(found, key=lambda image: image.key)
