"""Read every array of an ``.npz`` file: members inflated by ISA-L on several threads, each checked
against its CRC-32.

``numpy.load`` inflates a member with zlib and copies it out in small pieces; a model file holds
hundreds of megabytes of float64 vectors, and ISA-L inflates them about twice as fast. Both let go of
the GIL, so the members are inflated on up to ``LOAD_THREADS`` threads at once, the largest first,
each through its own file handle. Stored (uncompressed) members, as ``numpy.savez`` writes them, are
read as they are. The arrays are read-only views of the inflated bytes: no copy is made. Members can be
left out (``skip``), and :func:`same_bytes` tells whether an array made another way is what a member
holds (its size and CRC-32), inflating only the member's header.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Collection
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


def write_npz(handle: BinaryIO, arrays: dict[str, np.ndarray], stored: Collection[str] = ()) -> None:
    """Write ``arrays`` as ``numpy.savez_compressed`` does (deflated ``.npy`` members, no pickled objects), but the
    members named in ``stored``, which are written as they are (read back without inflating)."""
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def array_names(path: Path) -> set[str]:
    """The names (without ``.npy``) of the arrays of the ``.npz`` file at ``path``, from its directory."""
    with zipfile.ZipFile(path) as archive:
        return {name.removesuffix(".npy") for name in archive.namelist() if name.endswith(".npy")}


def read_npz(path: Path, skip: Collection[str] = (), only: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file at ``path``, by name (without ``.npy``), but those named in ``skip``;
    with ``only``, just those named there.

    Raises ``zipfile.BadZipFile``, ``ValueError`` or ``EOFError`` for a file that is not a whole,
    readable archive of arrays (a wrong CRC, a truncated member, an unknown compression, a bad header).
    """
    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist() if info.filename.endswith(".npy")
                   and info.filename[:-4] not in skip and (only is None or info.filename[:-4] in only)]
    if not members:
        return {}
    members.sort(key=lambda info: info.compress_size, reverse=True)

    def read(info: zipfile.ZipInfo) -> np.ndarray:
        with open(path, "rb") as handle:
            return _array(_member_bytes(handle, info), info.filename)

    with ThreadPoolExecutor(min(LOAD_THREADS, len(members))) as pool:
        arrays = list(pool.map(read, members))
    return {info.filename.removesuffix(".npy"): array for info, array in zip(members, arrays)}


def same_bytes(path: Path, name: str, array: np.ndarray) -> bool:
    """Whether the ``.npy`` image of ``array`` (C order) is what member ``name`` (without ``.npy``) of the file
    holds: its header, read from the member itself, describes the array's shape and type, and header and data
    have the member's size and CRC-32. Only the member's first bytes are inflated."""
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(name + ".npy")
        except KeyError:
            return False
    try:
        with open(path, "rb") as handle:
            header = _header_image(handle, info)
        shape, fortran, dtype = read_header(io.BytesIO(header))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, isal_zlib.error):  # type: ignore[misc]
        return False
    data = np.ascontiguousarray(array)
    if fortran or shape != data.shape or dtype != data.dtype or len(header) + data.nbytes != info.file_size:
        return False
    return isal_zlib.crc32(data.reshape(-1).view(np.uint8), isal_zlib.crc32(header)) == info.CRC


#: Bytes of a member read to find its ``.npy`` header (which numpy pads to a multiple of 64 bytes).
_HEADER_READ = 1 << 16


def _header_image(handle: BinaryIO, info: zipfile.ZipInfo) -> bytes:
    """The bytes of a member's ``.npy`` header (magic, version, length and the header itself)."""
    _seek_member(handle, info)
    packed = handle.read(min(info.compress_size, _HEADER_READ))
    if info.compress_type == zipfile.ZIP_DEFLATED:
        start = isal_zlib.decompressobj(-15).decompress(packed, _HEADER_READ)
    elif info.compress_type == zipfile.ZIP_STORED:
        start = packed
    else:
        raise zipfile.BadZipFile(f"{info.filename}: compression method {info.compress_type} is not supported")
    if len(start) < 10 or start[:6] != b"\x93NUMPY":
        raise ValueError(f"{info.filename}: not an .npy image")
    if start[6] == 1:
        length = 10 + struct.unpack("<H", start[8:10])[0]
    else:
        length = 12 + struct.unpack("<I", start[8:12])[0]
    if len(start) < length:
        raise ValueError(f"{info.filename}: its header is longer than the bytes read")
    return start[:length]


def _seek_member(handle: BinaryIO, info: zipfile.ZipInfo) -> None:
    """Puts ``handle`` at the start of a member's (compressed) data, past its local header."""
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size:
        raise EOFError(f"{info.filename}: the file ends inside this member's header")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if signature != _LOCAL_SIGNATURE:
        raise zipfile.BadZipFile(f"{info.filename}: bad local file header")
    handle.seek(name_length + extra_length, io.SEEK_CUR)


def _member_bytes(handle: BinaryIO, info: zipfile.ZipInfo) -> bytes:
    """A member's uncompressed bytes, checked against its size and CRC-32."""
    _seek_member(handle, info)
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
