"""Reading ``.npy`` files safely from several threads.

numpy parses an ``.npy`` header with ``ast.literal_eval``; in CPython 3.11 two threads compiling at once
can fail with "AST constructor recursion depth mismatch". Every header is read under one lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np

#: Held while numpy parses an ``.npy`` header.
HEADER_LOCK = threading.Lock()


def read_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) of the ``.npy`` image at ``stream``'s position (versions 1.0 and 2.0)."""
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format version {version} is not supported")
    with HEADER_LOCK:
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)
        return np.lib.format.read_array_header_2_0(stream)


def load(path: str | Path) -> np.ndarray:
    """``np.load`` of a plain ``.npy`` file (no pickled objects), its header parsed under the lock."""
    with open(path, "rb") as handle:
        shape, fortran, dtype = read_header(handle)
        if dtype.hasobject:
            raise ValueError(f"{path} holds Python objects, which are not read")
        count = int(np.prod(shape, dtype=np.int64))
        array = np.fromfile(handle, dtype=dtype, count=count)
    if len(array) != count:
        raise ValueError(f"{path} is truncated: {len(array)} of {count} values")
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
