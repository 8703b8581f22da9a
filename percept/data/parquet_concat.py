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
from typing import BinaryIO

from percept.data.thrift_compact import STRUCT, Field, ThriftError, decode, encode

MAGIC = b"PAR1"

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
        try:
            footer = decode(handle.read(length))
        except (ThriftError, IndexError) as exc:
            raise NotJoinable(f"{path} has a footer that cannot be read ({exc})") from None
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
    return encode(footer)


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
