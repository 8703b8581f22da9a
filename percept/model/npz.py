"""Read every array of an ``.npz`` file: members inflated by ISA-L on several threads, each checked
against its CRC-32.

``numpy.load`` inflates a member with zlib and copies it out in small pieces; a model file holds
hundreds of megabytes of float64 vectors, and ISA-L inflates them about twice as fast. Both let go of
the GIL, so the members are inflated on up to ``LOAD_THREADS`` threads at once, the largest first,
each through its own file handle. Stored (uncompressed) members, as ``numpy.savez`` writes them, are
read as they are. The arrays are read-only views of the inflated bytes: no copy is made.
"""

from __future__ import annotations

import io
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
from isal import isal_zlib

from percept.data.npy import read_header

#: Threads inflating a file's members at once: more than the cores of most machines, so that members of equal
#: size share the cores evenly (on two cores, two threads leave one core idle while the fifth of five is inflated).
LOAD_THREADS = 8


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length
_LOCAL_SIGNATURE = b"PK\x03\x04"


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file at ``path``, by name (without ``.npy``).

    Raises ``zipfile.BadZipFile``, ``ValueError`` or ``EOFError`` for a file that is not a whole,
    readable archive of arrays (a wrong CRC, a truncated member, an unknown compression, a bad header).
    """
    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
    if not members:
        return {}
    members.sort(key=lambda info: info.compress_size, reverse=True)

    def read(info: zipfile.ZipInfo) -> np.ndarray:
        with open(path, "rb") as handle:
            return _array(_member_bytes(handle, info), info.filename)

    with ThreadPoolExecutor(min(LOAD_THREADS, len(members))) as pool:
        arrays = list(pool.map(read, members))
    return {info.filename.removesuffix(".npy"): array for info, array in zip(members, arrays)}


def _member_bytes(handle: BinaryIO, info: zipfile.ZipInfo) -> bytes:
    """A member's uncompressed bytes, checked against its size and CRC-32."""
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size:
        raise EOFError(f"{info.filename}: the file ends inside this member's header")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if signature != _LOCAL_SIGNATURE:
        raise zipfile.BadZipFile(f"{info.filename}: bad local file header")
    handle.seek(name_length + extra_length, io.SEEK_CUR)
    packed = handle.read(info.compress_size)
    if len(packed) < info.compress_size:
        raise EOFError(f"{info.filename}: the file ends inside this member")
    if info.compress_type == zipfile.ZIP_STORED:
        data = packed
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        try:
            data = isal_zlib.decompress(packed, -15, info.file_size or 1)
        except isal_zlib.error as exc:  # type: ignore[misc]  # isal's stub declares error an instance, not a class
            raise zipfile.BadZipFile(f"{info.filename}: {exc}") from None
    else:
        raise zipfile.BadZipFile(f"{info.filename}: compression method {info.compress_type} is not supported")
    if len(data) != info.file_size or isal_zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"{info.filename}: bad CRC-32 or size")
    return data


def _array(data: bytes, name: str) -> np.ndarray:
    """The array an ``.npy`` image holds (no pickled objects): read-only, sharing ``data``'s memory."""
    stream = io.BytesIO(data)
    try:
        shape, fortran, dtype = read_header(stream)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if dtype.hasobject:
        raise ValueError(f"{name}: holds Python objects, which are not read")
    count = int(np.prod(shape, dtype=np.int64))
    if stream.tell() + count * dtype.itemsize != len(data):
        raise ValueError(f"{name}: {len(data) - stream.tell()} bytes of data for an array of shape {shape}")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
