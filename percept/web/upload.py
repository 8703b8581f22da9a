"""Read one file field of a multipart/form-data request as the body streams in, within a byte cap
and a pace.

Nothing is spooled to disk. The declared Content-Length is checked before a byte is read;
then every chunk (chunked bodies included) is counted as it arrives, and reading stops at the
first chunk that passes the cap. The field's bytes are kept in a memory map of their own
(:class:`~percept.web.bodies.MappedBody`, handed back to the system whole when the upload is
answered) and read through a buffered reader (decoders that read one byte at a time then cost a
C call, not a Python one); they never exceed ``max_bytes``, and the body as a whole may add
:data:`FORM_ALLOWANCE` bytes of form framing.

A body must keep its :class:`BodyPace` (no long silence, a minimum average rate), or it is refused
with 408. Read through an :class:`~percept.web.admission.UploadGate`, an upload first waits for a
place (503 when none comes free in time), counts its bytes against the gate's memory, and is
refused with 408 when its place is given to another upload because it stopped sending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.types import Message, Receive

from percept.web.admission import Busy, Dropped, Ticket, UploadGate
from percept.web.bodies import MappedBody

#: Bytes of boundaries, part headers and other fields allowed beside the file itself.
FORM_ALLOWANCE = 64 * 1024


class UploadRefused(Exception):
    """A request body that is not accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class MissingField(Exception):
    """The form holds no field of the expected name."""


@dataclass(frozen=True)
class Upload:
    """The field's bytes, how many body bytes were read and the upload's admission ticket (if any);
    :meth:`close` hands their memory and the ticket back."""

    body: MappedBody
    filename: str | None
    received: int
    ticket: Ticket | None = None

    @property
    def size(self) -> int:
        return self.body.size

    def open(self) -> BinaryIO:
        """A new seekable, buffered file over the field's bytes."""
        return self.body.open()

    def close(self) -> None:
        self.body.close()
        if self.ticket is not None:
            self.ticket.close()


@dataclass(frozen=True)
class BodyPace:
    """How fast a request body must arrive: no silence longer than ``timeout`` seconds, and after the
    first ``grace`` seconds at least ``min_rate`` bytes a second on average (a body trickling in a few
    bytes at a time is refused after about ``grace`` seconds, however often it sends)."""

    timeout: float = 5.0
    min_rate: float = 16 * 1024
    grace: float = 1.0

    def next_deadline(self, started: float, last: float, received: int) -> float:
        """When the body's next bytes must have come, for a body started at ``started`` whose last bytes
        came at ``last`` and that has brought ``received`` bytes so far (pure)."""
        return min(last + self.timeout, started + min(self.grace, self.timeout) + received / self.min_rate)


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
    """A streaming multipart parser that keeps the first part named ``field`` (pure: no I/O); the part's
    bytes go to a :class:`MappedBody` that :meth:`close` hands back unless :meth:`result` took it."""

    def __init__(self, boundary: bytes, field: str, max_bytes: int):
        self.field, self.max_bytes = field.encode(), max_bytes
        self.body: MappedBody | None = None
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

    def result(self) -> MappedBody:
        """The field's bytes once the body has ended (the caller closes them)."""
        if not self.ended:
            raise UploadRefused(400, "the multipart/form-data body ends before its closing boundary: "
                                     "the upload was cut short")
        if self.body is None:
            raise MissingField(f"the form has no file field named '{self.field.decode()}'")
        body, self.body = self.body, None
        return body

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

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
            self.body = MappedBody(self.max_bytes)
            filename = params.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename is not None else None

    def _part_begin(self) -> None:
        self._keeping = False

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._keeping or self.body is None:
            return
        if self.body.size + (end - start) > self.max_bytes:
            raise too_large(self.max_bytes)
        self.body.append(memoryview(data)[start:end])

    def _part_end(self) -> None:
        self._keeping = False

    def _end(self) -> None:
        self.ended = True


def too_slow(pace: BodyPace) -> UploadRefused:
    return UploadRefused(408, f"the upload arrived too slowly (this server waits at most {pace.timeout:g} s for "
                              f"the next bytes and needs {pace.min_rate / 1024:g} kB/s on average after the first "
                              f"{min(pace.grace, pace.timeout):g} s): send it again over a better connection")


def dropped() -> UploadRefused:
    return UploadRefused(408, "the upload stopped sending and its place was given to another upload: send it again")


def busy() -> UploadRefused:
    return UploadRefused(503, "this server is busy with other uploads: send the image again in a moment")


async def next_message(receive: Receive, wait: float, ticket: Ticket | None) -> Message:
    """The next ASGI message within ``wait`` seconds (408 after that, or once ``ticket`` is dropped)."""
    if wait <= 0:
        raise TimeoutError
    pending = asyncio.ensure_future(receive())
    if ticket is None:
        await asyncio.wait({pending}, timeout=wait)
    else:
        ticket.listen()
        try:
            either: set[asyncio.Future[Any]] = {pending, ticket.dropped}  # the message, or the ticket's drop
            await asyncio.wait(either, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ticket.heard()
    if ticket is not None and ticket.dropped.done():
        pending.cancel()
        raise Dropped
    if not pending.done():
        pending.cancel()
        raise TimeoutError
    return pending.result()


def declared_length(request: Request, max_bytes: int) -> int | None:
    """The body's declared Content-Length (None: chunked), refused when it is not a number or over the cap."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.strip().isdigit():
        raise UploadRefused(400, f"the Content-Length header {declared!r} is not a number")
    if int(declared) > max_bytes + FORM_ALLOWANCE:
        raise too_large(max_bytes)
    return int(declared)


async def read_upload(request: Request, field: str, max_bytes: int, pace: BodyPace = BodyPace(),
                      gate: UploadGate | None = None, clock: Callable[[], float] = time.monotonic) -> Upload:
    """The bytes of the form field ``field`` (at most ``max_bytes``), read while the body streams in at
    ``pace``; with a ``gate``, once admitted by it, with the body's bytes counted on the upload's ticket
    (whose receiving place is given up once the body is complete). The caller closes the upload."""
    declared = declared_length(request, max_bytes)
    form = FormField(form_boundary(request.headers.get("content-type")), field, max_bytes)
    ticket = None
    try:
        ticket = await gate.admit(declared) if gate is not None else None
        received, more = 0, True
        started = last = clock()
        while more:
            message = await next_message(request.receive, pace.next_deadline(started, last, received) - clock(),
                                         ticket)
            if message["type"] == "http.disconnect":
                raise UploadRefused(400, "the upload was interrupted before it ended")
            chunk, more = message.get("body", b""), message.get("more_body", False)
            if chunk:
                received += len(chunk)
                if received > max_bytes + FORM_ALLOWANCE:
                    raise too_large(max_bytes)
                if ticket is not None:
                    await ticket.take(len(chunk))
                form.feed(chunk)
                last = clock()
        if ticket is not None:
            ticket.received()
        upload, ticket = Upload(form.result(), form.filename, received, ticket), None
        return upload
    except TimeoutError:
        raise too_slow(pace) from None
    except Dropped:
        raise dropped() from None
    except Busy:
        raise busy() from None
    finally:
        form.close()  # the bytes of a refused upload go at once
        if ticket is not None:
            ticket.close()
