"""Thrift's compact protocol, in which Parquet encodes its footer and page headers.

A struct is read into a list of :class:`Field` (id, wire type, value) that :func:`encode` writes back
to the same bytes, so a footer can be changed field by field; :func:`plain` turns such a list into
plain Python values ({field id: value}) for readers that only look.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)


class ThriftError(ValueError):
    """Bytes that are not a compact-protocol struct this module reads."""


@dataclass
class Field:
    """One field of a struct: its id, wire type and value as read (a list of Fields for a struct; for a list or
    set, (element type, items); for a map, (key and value types, [(key, value)]); raw bytes for a double)."""

    id: int
    kind: int
    value: Any


class Reader:
    """Reads compact-protocol values from ``data`` starting at ``pos`` (``pos`` follows what was read)."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

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
        return bytes(self.data[self.pos - size:self.pos])

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
        raise ThriftError(f"unknown Thrift type {kind}")

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


def decode(data: bytes, pos: int = 0) -> list[Field]:
    """The compact-protocol struct at ``data[pos:]``."""
    return Reader(data, pos).struct()


def encode(fields: list[Field]) -> bytes:
    """A struct in the compact protocol: the bytes :func:`decode` read it from."""
    writer = _Writer()
    writer.struct(fields)
    return bytes(writer.out)


def plain(fields: list[Field]) -> dict[int, Any]:
    """A struct as plain values: {field id: value}, structs as dicts, lists and sets as lists, maps as dicts,
    bytes signed, doubles as floats, booleans as bools."""
    return {field.id: _plain(field.kind, field.value) for field in fields}


def _plain(kind: int, value: Any) -> Any:
    if kind == STRUCT:
        return plain(value)
    if kind in (LIST, SET):
        element, items = value
        if element in (TRUE, FALSE):
            return [item == TRUE for item in items]
        return [_plain(element, item) for item in items]
    if kind == MAP:
        types, items = value
        return {_plain(types >> 4, key): _plain(types & 0x0F, item) for key, item in items}
    if kind == BYTE:
        return struct.unpack("b", bytes([value]))[0]
    if kind == DOUBLE:
        return struct.unpack("<d", value)[0]
    return value
