"""Read one string column of a small Parquet file without pyarrow (the names beside embeddings).

Loading pyarrow costs a process about 70 MB and a tenth of a second, which is most of what the
drop-in needs beyond the arithmetic when all it wants from a metadata file is its image paths.
This reader handles the files pandas and pyarrow write for such tables: a flat schema, byte-array
column, PLAIN or dictionary encoding, data pages v1 or v2, uncompressed or Snappy. Anything else
raises :class:`Unsupported`, and the caller reads the file with pyarrow instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from percept.data.thrift_compact import Reader, ThriftError, plain

BYTE_ARRAY = 6
PLAIN, PLAIN_DICTIONARY, RLE_DICTIONARY = 0, 2, 8
DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 2, 3
UNCOMPRESSED, SNAPPY = 0, 1
OPTIONAL = 1


class Unsupported(Exception):
    """The file uses a Parquet feature this reader does not handle."""


#: A decoded Thrift struct: {field id: value} (:func:`percept.data.thrift_compact.plain`).
ThriftStruct = dict[int, Any]


def _struct(data: bytes, pos: int) -> tuple[ThriftStruct, int]:
    """The Thrift struct at ``data[pos:]`` as plain values, and the position after it."""
    reader = Reader(data, pos)
    try:
        return plain(reader.struct()), reader.pos
    except ThriftError as exc:
        raise Unsupported(str(exc)) from None


def snappy_decompress(data: bytes) -> bytes:
    """Snappy's raw format (the block format Parquet uses)."""
    import cramjam

    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError:
        raise Unsupported("corrupt snappy data") from None


def _hybrid(data: bytes, pos: int, end: int, width: int, count: int) -> np.ndarray:
    """``count`` values of the RLE / bit-packed hybrid encoding in ``data[pos:end]``."""
    out = np.empty(count, dtype=np.int64)
    done = 0
    reader = Reader(data, pos)
    while done < count and reader.pos < end:
        header = reader.varint()
        if header & 1:
            groups = header >> 1
            raw = np.frombuffer(data, dtype=np.uint8, count=groups * width, offset=reader.pos)
            reader.pos += groups * width
            bits = np.unpackbits(raw, bitorder="little").reshape(-1, width) if width else np.zeros((groups * 8, 0))
            values = (bits.astype(np.int64) << np.arange(width)).sum(axis=1)
        else:
            size = (width + 7) // 8
            value = int.from_bytes(data[reader.pos:reader.pos + size], "little")
            reader.pos += size
            values = np.full(header >> 1, value, dtype=np.int64)
        take = min(len(values), count - done)
        out[done:done + take] = values[:take]
        done += take
    if done < count:
        raise Unsupported("truncated levels")
    return out


def _plain_strings(data: bytes, count: int) -> list[str]:
    out, pos = [], 0
    for _ in range(count):
        size = int.from_bytes(data[pos:pos + 4], "little")
        out.append(data[pos + 4:pos + 4 + size].decode("utf-8"))
        pos += 4 + size
    return out


def read_string_column(path: str | Path, column: str) -> list[str | None]:
    """The values of ``column`` (a required or optional byte-array column), in row order (None where
    an optional column has no value)."""
    data = Path(path).read_bytes()
    if data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise Unsupported("not a parquet file")
    footer = int.from_bytes(data[-8:-4], "little")
    meta, _ = _struct(data, len(data) - 8 - footer)
    schema = meta.get(2, [])
    leaves = [s for s in schema[1:] if not s.get(5)]
    if len(leaves) != len(schema) - 1:
        raise Unsupported("nested schema")
    names = [s.get(4, b"").decode() for s in leaves]
    if column not in names:
        raise Unsupported(f"no column {column}")
    index = names.index(column)
    if leaves[index].get(1) != BYTE_ARRAY:
        raise Unsupported("not a byte-array column")
    optional = leaves[index].get(3) == OPTIONAL
    values: list[str | None] = []
    for group in meta.get(4, []):
        chunk = group[1][index]
        if 1 in chunk:
            raise Unsupported("column in another file")
        values += _read_chunk(data, chunk[3], optional)
    if len(values) != meta.get(3, len(values)):
        raise Unsupported("row count mismatch")
    return values


def _read_chunk(data: bytes, info: ThriftStruct, optional: bool) -> list[str | None]:
    codec = info.get(4, UNCOMPRESSED)
    if codec not in (UNCOMPRESSED, SNAPPY):
        raise Unsupported(f"codec {codec}")
    expand = snappy_decompress if codec == SNAPPY else bytes
    pos = info.get(11) or info[9]
    end = pos + info[7]
    remaining, dictionary = info[5], None
    out: list[str | None] = []
    while remaining > 0 and pos < end:
        header, body_start = _struct(data, pos)
        pos = body_start + header[3]
        body = data[body_start:pos]
        kind = header[1]
        if kind == DICTIONARY_PAGE:
            dictionary = _plain_strings(expand(body), header[7][1])
            continue
        if kind == DATA_PAGE:
            page = expand(body)
            count, encoding = header[5][1], header[5][2]
            start = 0
            defined = np.ones(count, dtype=bool)
            if optional:
                size = int.from_bytes(page[:4], "little")
                defined = _hybrid(page, 4, 4 + size, 1, count) == 1
                start = 4 + size
            values = page[start:]
        elif kind == DATA_PAGE_V2:
            v2 = header[8]
            count, encoding = v2[1], v2[4]
            levels = v2.get(5, 0) + v2.get(6, 0)
            if v2.get(6, 0):
                raise Unsupported("repetition levels")
            defined = np.ones(count, dtype=bool)
            if optional:
                defined = _hybrid(body, 0, levels, 1, count) == 1
            values = body[levels:]
            if v2.get(7, True):
                values = expand(values)
        else:
            continue
        present = int(defined.sum())
        if encoding == PLAIN:
            strings = _plain_strings(values, present)
        elif encoding in (PLAIN_DICTIONARY, RLE_DICTIONARY) and dictionary is not None:
            indices = _hybrid(values, 1, len(values), values[0], present) if present else np.empty(0, np.int64)
            strings = [dictionary[i] for i in indices]
        else:
            raise Unsupported(f"encoding {encoding}")
        if present == count:
            out += strings
        else:
            filled = iter(strings)
            out += [next(filled) if d else None for d in defined]
        remaining -= count
    return out
