"""An upload's bytes in memory of their own: an anonymous memory map, handed back whole when closed.

Kept in the allocator's heap, the pieces of many parallel uploads would interleave with everything
else the server allocates meanwhile, and the heap would keep their pages after they are freed (a
burst of large uploads left the server's memory high for good). A memory map of the upload's
largest size takes pages only as bytes are written, and returns them all to the system at once
when it is closed.
"""

from __future__ import annotations

import io
import mmap
from typing import BinaryIO

#: The buffer of the readers decoders see (Pillow reads some headers one byte at a time).
READ_BUFFER = 64 * 1024


class ViewReader(io.RawIOBase):
    """A seekable read-only file over a memoryview (released when the file is closed)."""

    def __init__(self, view: memoryview):
        super().__init__()
        self.view, self.position = view, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: len(self.view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.position = base + offset
        return self.position

    def readinto(self, buffer) -> int:
        target = memoryview(buffer).cast("B")
        count = max(0, min(len(target), len(self.view) - self.position))
        target[:count] = self.view[self.position:self.position + count]
        self.position += count
        return count

    def close(self) -> None:
        if not self.closed:
            self.view.release()
        super().close()


#: Private anonymous pages, with no swap reserved for the part never written (where the system has the flag).
MAP_FLAGS = (mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_NORESERVE) if hasattr(mmap, "MAP_NORESERVE") else None


class MappedBody:
    """Up to ``capacity`` bytes, appended in order, in an anonymous memory map."""

    def __init__(self, capacity: int):
        size = max(capacity, 1)
        self.map = mmap.mmap(-1, size, flags=MAP_FLAGS) if MAP_FLAGS is not None else mmap.mmap(-1, size)
        self.size = 0
        self.readers: list[BinaryIO] = []

    def append(self, data: bytes | memoryview) -> None:
        end = self.size + len(data)
        if end > len(self.map):
            raise ValueError(f"{end} bytes do not fit in {len(self.map)}")
        self.map[self.size:end] = data
        self.size = end

    def open(self) -> BinaryIO:
        """A new seekable, buffered file over the bytes appended so far."""
        with memoryview(self.map) as whole:
            reader = io.BufferedReader(ViewReader(whole[:self.size]), READ_BUFFER)
        self.readers.append(reader)
        return reader

    def close(self) -> None:
        """Hand the memory back (closing any reader still open)."""
        for reader in self.readers:
            reader.close()
        self.readers.clear()
        if not self.map.closed:
            self.map.close()
