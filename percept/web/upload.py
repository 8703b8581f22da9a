"""Read one file field of a multipart/form-data request as the body streams in, within a byte cap.

Nothing is spooled to disk. The declared Content-Length is checked before a byte is read;
then every chunk (chunked bodies included) is counted as it arrives, and reading stops at the
first chunk that passes the cap. The field's bytes are kept in memory as the pieces that
brought them, never copied into one growing buffer (many parallel uploads would fragment the
heap) and read through :class:`PiecesReader`; they never exceed ``max_bytes``, and the body as
a whole may add :data:`FORM_ALLOWANCE` bytes of form framing.
"""

from __future__ import annotations

import bisect
import io
import itertools
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

#: Bytes of boundaries, part headers and other fields allowed beside the file itself.
FORM_ALLOWANCE = 64 * 1024


class UploadRefused(Exception):
    """A request body that is not accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class MissingField(Exception):
    """The form holds no field of the expected name."""


class PiecesReader(io.RawIOBase):
    """A seekable read-only file over a list of byte strings (so they need not be joined)."""

    def __init__(self, pieces: list[bytes]):
        super().__init__()
        self.pieces = pieces
        self.starts = list(itertools.accumulate((len(p) for p in pieces), initial=0))
        self.size, self.position = self.starts[-1], 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.position = base + offset
        return self.position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self.position < self.size:
            index = bisect.bisect_right(self.starts, self.position) - 1
            piece, offset = self.pieces[index], self.position - self.starts[index]
            count = min(len(piece) - offset, len(view) - done)
            view[done:done + count] = piece[offset:offset + count]
            done += count
            self.position += count
        return done


@dataclass(frozen=True)
class Upload:
    """The field's bytes (as the pieces they arrived in) and how many body bytes were read."""

    pieces: list[bytes]
    filename: str | None
    received: int

    @property
    def size(self) -> int:
        return sum(len(piece) for piece in self.pieces)

    def open(self) -> PiecesReader:
        """A new seekable file over the field's bytes."""
        return PiecesReader(self.pieces)


def too_large(max_bytes: int) -> UploadRefused:
    return UploadRefused(413, f"the upload is larger than this server's limit of {max_bytes} bytes "
                              f"({max_bytes / 2**20:g} MB): send a smaller image")


def form_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type; refuses other types (415) and a missing one (422)."""
    if not content_type:
        raise MissingField("the request has no body: send the image as multipart/form-data")
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise UploadRefused(415, f"the request body is {kind.decode('latin-1') or 'untyped'}: send the image as "
                                 "multipart/form-data (a form with a file field named 'image')")
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadRefused(400, "the multipart/form-data body names no boundary: send it as a browser or "
                                 "curl -F would")
    return boundary


class FormField:
    """A streaming multipart parser that keeps the first part named ``field`` (pure: no I/O)."""

    def __init__(self, boundary: bytes, field: str, max_bytes: int):
        self.field, self.max_bytes = field.encode(), max_bytes
        self.pieces: list[bytes] = []
        self.size = 0
        self.filename: str | None = None
        self.found = self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._keeping = False
        try:
            self.parser = MultipartParser(boundary, callbacks={
                "on_header_begin": self._header_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value_part, "on_header_end": self._header_end,
                "on_part_begin": self._part_begin, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_end": self._end})
        except (FormParserError, ValueError) as exc:
            raise UploadRefused(400, f"the multipart boundary is unusable ({exc})") from None

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except (FormParserError, ValueError) as exc:
            raise UploadRefused(400, f"the upload is not well-formed multipart/form-data ({exc})") from None

    def result(self) -> list[bytes]:
        """The field's bytes, as the pieces they arrived in, once the body has ended."""
        if not self.ended:
            raise UploadRefused(400, "the multipart/form-data body ends before its closing boundary: "
                                     "the upload was cut short")
        if not self.found:
            raise MissingField(f"the form has no file field named '{self.field.decode()}'")
        return self.pieces

    def _header_begin(self) -> None:
        self._header_name.clear()
        self._header_value.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_name).strip().lower() != b"content-disposition":
            return
        _, params = parse_options_header(bytes(self._header_value).decode("latin-1"))
        if params.get(b"name") == self.field and not self.found:
            self._keeping = self.found = True
            filename = params.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename is not None else None

    def _part_begin(self) -> None:
        self._keeping = False

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._keeping:
            return
        if self.size + (end - start) > self.max_bytes:
            raise too_large(self.max_bytes)
        self.pieces.append(bytes(data[start:end]))
        self.size += end - start

    def _part_end(self) -> None:
        self._keeping = False

    def _end(self) -> None:
        self.ended = True


async def read_upload(request: Request, field: str, max_bytes: int) -> Upload:
    """The bytes of the form field ``field`` (at most ``max_bytes``), read while the body streams in."""
    body_cap = max_bytes + FORM_ALLOWANCE
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.strip().isdigit()):
        raise UploadRefused(400, f"the Content-Length header {declared!r} is not a number")
    if declared is not None and int(declared) > body_cap:
        raise too_large(max_bytes)
    form = FormField(form_boundary(request.headers.get("content-type")), field, max_bytes)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_cap:
                raise too_large(max_bytes)
            form.feed(chunk)
    except ClientDisconnect:
        raise UploadRefused(400, "the upload was interrupted before it ended") from None
    return Upload(form.result(), form.filename, received)
