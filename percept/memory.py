"""Give memory that Python has freed back to the operating system."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _libc():
    """The C library's symbols, as linked into this process (no library search, which runs ldconfig)."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def release_free_memory() -> None:
    """Return freed heap pages to the system (glibc's malloc_trim); a no-op elsewhere.

    Parsing a large GeoJSON file leaves the heap full of freed objects that the
    allocator would otherwise keep, inflating the peak memory of what follows.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
