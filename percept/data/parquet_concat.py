"""Join Parquet files written with one schema into the file one writer would have written, byte for byte.

A Parquet file is ``PAR1``, its row groups, a Thrift-encoded footer (``FileMetaData``), the footer's
length and ``PAR1``. Row groups hold no positions, so the files' row groups are copied as they are,
one file after another, and one footer is written: the first file's, with every file's row groups,
their byte offsets moved to where they now lie, their ordinals renumbered and the row count summed.
No value is decoded, so joining costs about what copying the bytes costs.

Files with page indexes, bloom filters, encryption or columns in other files are refused (pyarrow
writes none of them by default).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"PAR1"

# Thrift compact protocol types.
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)

# Field ids of Parquet's footer (parquet.thrift).
FILE_NUM_ROWS, FILE_ROW_GROUPS, FILE_ENCRYPTION = 3, 4, 8
GROUP_COLUMNS, GROUP_FILE_OFFSET, GROUP_ORDINAL = 1, 5, 7
CHUNK_FILE_PATH, CHUNK_FILE_OFFSET, CHUNK_META = 1, 2, 3
CHUNK_UNSUPPORTED = {4: "offset index", 6: "column index", 8: "encryption", 9: "encryption"}
META_OFFSETS = (9, 10, 11)  # data, index and dictionary page offsets
META_UNSUPPORTED = {14: "bloom filter"}


class NotJoinable(ValueError):
    """The files cannot be joined by copying their row groups."""


@dataclass
class Field:
    """One field of a Thrift struct: its id, compact type and value (a nested list of Fields for structs)."""

    id: int
    kind: int
    value: Any


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def byte(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, size: int) -> bytes:
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def value(self, kind: int) -> Any:
        if kind in (TRUE, FALSE):
            return kind == TRUE
        if kind == BYTE:
            return self.byte()
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == DOUBLE:
            return self.take(8)
        if kind == BINARY:
            return self.take(self.varint())
        if kind in (LIST, SET):
            header = self.byte()
            size = header >> 4 if header >> 4 != 15 else self.varint()
            element = header & 0x0F
            return element, [self.byte() if element in (TRUE, FALSE) else self.value(element) for _ in range(size)]
        if kind == MAP:
            size = self.varint()
            types = self.byte() if size else 0
            return types, [(self.value(types >> 4), self.value(types & 0x0F)) for _ in range(size)]
        if kind == STRUCT:
            return self.struct()
        raise NotJoinable(f"unknown Thrift type {kind} in a Parquet footer")

    def struct(self) -> list[Field]:
        fields: list[Field] = []
        last = 0
        while True:
            header = self.byte()
            if header == STOP:
                return fields
            delta, kind = header >> 4, header & 0x0F
            last = last + delta if delta else self.zigzag()
            fields.append(Field(last, kind, self.value(kind)))


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while n >= 0x80:
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7
        self.out.append(n)

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, kind: int, value: Any) -> None:
        if kind == BYTE:
            self.out.append(value)
        elif kind in (I16, I32, I64):
            self.zigzag(value)
        elif kind == DOUBLE:
            self.out += value
        elif kind == BINARY:
            self.varint(len(value))
            self.out += value
        elif kind in (LIST, SET):
            element, items = value
            if len(items) < 15:
                self.out.append(len(items) << 4 | element)
            else:
                self.out.append(0xF0 | element)
                self.varint(len(items))
            for item in items:
                if element in (TRUE, FALSE):
                    self.out.append(item)
                else:
                    self.value(element, item)
        elif kind == MAP:
            types, items = value
            self.varint(len(items))
            if items:
                self.out.append(types)
            for key, item in items:
                self.value(types >> 4, key)
                self.value(types & 0x0F, item)
        elif kind == STRUCT:
            self.struct(value)

    def struct(self, fields: list[Field]) -> None:
        last = 0
        for field in fields:
            delta = field.id - last
            if 0 < delta <= 15:
                self.out.append(delta << 4 | field.kind)
            else:
                self.out.append(field.kind)
                self.zigzag(field.id)
            if field.kind not in (TRUE, FALSE):
                self.value(field.kind, field.value)
            last = field.id
        self.out.append(STOP)


def encode_footer(fields: list[Field]) -> bytes:
    """A footer (or any Thrift struct) in the compact protocol."""
    writer = _Writer()
    writer.struct(fields)
    return bytes(writer.out)


def decode_footer(data: bytes) -> list[Field]:
    """A compact-protocol Thrift struct."""
    return _Reader(data).struct()


@dataclass
class ParquetLayout:
    """Where a Parquet file's row groups lie (``data_start`` to ``data_stop``) and its decoded footer."""

    path: Path
    data_start: int
    data_stop: int
    footer: list[Field]


def read_layout(path: Path) -> ParquetLayout:
    """The row-group span and decoded footer of the Parquet file at ``path``."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        if size < 12:
            raise NotJoinable(f"{path} is not a Parquet file")
        handle.seek(size - 8)
        tail = handle.read(8)
        length = int.from_bytes(tail[:4], "little")
        if tail[4:] != MAGIC or length > size - 12:
            raise NotJoinable(f"{path} is not a Parquet file")
        handle.seek(size - 8 - length)
        footer = decode_footer(handle.read(length))
        handle.seek(0)
        if handle.read(4) != MAGIC:
            raise NotJoinable(f"{path} is not a Parquet file")
    return ParquetLayout(path, len(MAGIC), size - 8 - length, footer)


def _get(fields: list[Field], field_id: int) -> Field | None:
    return next((f for f in fields if f.id == field_id), None)


def _moved_group(group: list[Field], shift: int, ordinal: int) -> list[Field]:
    """A RowGroup whose offsets are ``shift`` bytes further on and whose ordinal is ``ordinal``."""
    out = []
    for field in group:
        if field.id == GROUP_FILE_OFFSET:
            field = Field(field.id, field.kind, field.value + shift)
        elif field.id == GROUP_ORDINAL:
            field = Field(field.id, field.kind, ordinal)
        elif field.id == GROUP_COLUMNS:
            element, chunks = field.value
            field = Field(field.id, field.kind, (element, [_moved_chunk(c, shift) for c in chunks]))
        out.append(field)
    return out


def _moved_chunk(chunk: list[Field], shift: int) -> list[Field]:
    out = []
    for field in chunk:
        if field.id in CHUNK_UNSUPPORTED or field.id == CHUNK_FILE_PATH:
            raise NotJoinable(f"a column chunk has {CHUNK_UNSUPPORTED.get(field.id, 'a file path')}")
        if field.id == CHUNK_FILE_OFFSET and field.value:  # deprecated: pyarrow writes 0, which stays 0
            field = Field(field.id, field.kind, field.value + shift)
        elif field.id == CHUNK_META:
            field = Field(field.id, field.kind, _moved_meta(field.value, shift))
        out.append(field)
    return out


def _moved_meta(meta: list[Field], shift: int) -> list[Field]:
    out = []
    for field in meta:
        if field.id in META_UNSUPPORTED:
            raise NotJoinable(f"a column chunk has a {META_UNSUPPORTED[field.id]}")
        if field.id in META_OFFSETS:
            field = Field(field.id, field.kind, field.value + shift)
        out.append(field)
    return out


def _without_row_groups(footer: list[Field]) -> list[Field]:
    """What must be equal in every joined file's footer: all but the row groups and the row count."""
    return [f for f in footer if f.id not in (FILE_NUM_ROWS, FILE_ROW_GROUPS)]


def joined_footer(layouts: list[ParquetLayout]) -> bytes:
    """The footer of the files of ``layouts`` written one after another (each one's row groups only)."""
    first = layouts[0].footer
    if _get(first, FILE_ENCRYPTION) is not None:
        raise NotJoinable("encrypted Parquet files are not joined")
    groups: list[list[Field]] = []
    rows = 0
    position = len(MAGIC)
    for layout in layouts:
        if _without_row_groups(layout.footer) != _without_row_groups(first):
            raise NotJoinable(f"{layout.path} has another schema or metadata than {layouts[0].path}")
        shift = position - layout.data_start
        found = _get(layout.footer, FILE_ROW_GROUPS)
        for group in found.value[1] if found else []:
            groups.append(_moved_group(group, shift, len(groups)))
        count = _get(layout.footer, FILE_NUM_ROWS)
        rows += count.value if count else 0
        position += layout.data_stop - layout.data_start
    element = _get(first, FILE_ROW_GROUPS)
    footer = []
    for field in first:
        if field.id == FILE_NUM_ROWS:
            field = Field(field.id, field.kind, rows)
        elif field.id == FILE_ROW_GROUPS:
            field = Field(field.id, field.kind, (element.value[0] if element else STRUCT, groups))
        footer.append(field)
    return encode_footer(footer)


def join_parquet(paths: Iterable[Path], out: BinaryIO) -> None:
    """Write the Parquet files at ``paths`` (the same schema and metadata) to ``out`` as one file."""
    layouts = [read_layout(Path(p)) for p in paths]
    if not layouts:
        raise ValueError("joining Parquet files needs at least one")
    footer = joined_footer(layouts)
    out.write(MAGIC)
    for layout in layouts:
        with open(layout.path, "rb") as handle:
            handle.seek(layout.data_start)
            _copy(handle, out, layout.data_stop - layout.data_start)
    out.write(footer)
    out.write(struct.pack("<I", len(footer)))
    out.write(MAGIC)


def _copy(source: BinaryIO, target: BinaryIO, size: int) -> None:
    """Copy ``size`` bytes from ``source``'s position to ``target``."""
    shutil.copyfileobj(_Limited(source, size), target, 1 << 22)


class _Limited:
    """A reader giving at most ``size`` bytes of ``source``."""

    def __init__(self, source: BinaryIO, size: int):
        self.source, self.left = source, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.source.read(n)
        self.left -= len(data)
        return data
