"""Clients that misbehave against ``percept serve`` over raw sockets, and ones that behave: stalled
uploads (a body that stops), a trickled upload (a few bytes at a time), half-sent request headers,
and a loop of ordinary uploads. Shared by the upload-limit tests and the upload benchmark."""

from __future__ import annotations

import io
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx
from PIL import Image

BOUNDARY = b"percept-test-boundary"


def form_head(filename: str = "street.jpg") -> bytes:
    return (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="image"; filename="' + filename.encode()
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n')


def form_tail() -> bytes:
    return b"\r\n--" + BOUNDARY + b"--\r\n"


def request_head(port: int, length: int, origin: str | None = None) -> bytes:
    origin_line = f"Origin: {origin}\r\n".encode() if origin else b""
    return (b"POST /api/score HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n" % (port, length)
            + b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n" + origin_line + b"\r\n")


def read_answer(sock: socket.socket, timeout: float) -> tuple[int | None, dict[str, str]]:
    """The status and headers of the server's answer (None: the connection closed without one)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    except OSError:
        pass
    if not data.startswith(b"HTTP/1.1 "):
        return None, {}
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}


class StalledUpload:
    """An upload that declares ``declared`` body bytes, sends ``sent`` of them and then sends nothing."""

    def __init__(self, port: int, declared: int, sent: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        body = form_head() + b"\xff\xd8\xff" + b"\0" * max(0, sent - len(form_head()) - 3)
        try:
            self.sock.sendall(request_head(port, declared) + body[:sent])
        except OSError:
            pass  # refused and closed while sending: read the answer

    def answer(self, timeout: float) -> int | None:
        """The status the server answered (waits up to ``timeout`` s; None: no answer yet)."""
        if self.status is None:
            self.status, self.headers = read_answer(self.sock, timeout)
        return self.status

    def close(self) -> None:
        self.sock.close()


def half_sent_request(port: int) -> socket.socket:
    """A connection that sends part of a request's headers and stops."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /api/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-")
    return sock


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes the connection within ``timeout`` s."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def trickled_upload(port: int, size: int = 200_000, piece: int = 100, every: float = 0.1,
                    give_up: float = 60.0) -> tuple[int | None, float]:
    """Send an upload of ``size`` bytes ``piece`` bytes every ``every`` s until answered; the status and the
    seconds from its first byte to the answer."""
    start = time.monotonic()
    body = form_head() + b"\0" * (size - len(form_head()) - len(form_tail())) + form_tail()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request_head(port, len(body)))
        sent = 0
        while sent < len(body) and time.monotonic() - start < give_up:
            sock.settimeout(every)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # answered
            except TimeoutError:
                pass
            except OSError:
                break
            try:
                sock.sendall(body[sent:sent + piece])
            except OSError:
                break
            sent += piece
        status, _ = read_answer(sock, give_up)
    return status, time.monotonic() - start


def junk_jpeg(size: int) -> bytes:
    """A JPEG start marker followed by zeros: Pillow skips the zeros one byte at a time looking for a marker."""
    return b"\xff\xd8\xff" + b"\0" * (size - 3)


def send_whole(port: int, data: bytes) -> socket.socket:
    """Send a whole upload of ``data`` on a new connection; returns it, for :func:`read_answer`."""
    body = form_head() + data + form_tail()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request_head(port, len(body)) + body)
    return sock


def photo_jpeg(size: tuple[int, int] = (640, 480), seed: int = 0) -> bytes:
    """An ordinary small street-like photo."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image = Image.merge("RGB", (image.getchannel(0), image.getchannel(0).rotate(seed % 360), image.getchannel(0)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


@dataclass
class NormalClients:
    """``count`` clients, each scoring ``photo`` again and again until stopped; every answer's status
    and seconds are recorded."""

    url: str
    photo: bytes
    count: int
    results: list[tuple[int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, requests_each: int | None = None) -> None:
        threads = [threading.Thread(target=self._client, args=(requests_each,), daemon=True)
                   for _ in range(self.count)]
        self.threads = threads
        for thread in threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()

    def _client(self, requests_each: int | None) -> None:
        with httpx.Client(timeout=120) as client:
            done = 0
            while not self.stop.is_set() and (requests_each is None or done < requests_each):
                start = time.monotonic()
                try:
                    status = client.post(self.url + "api/score",
                                         files={"image": ("street.jpg", self.photo, "image/jpeg")}).status_code
                except httpx.HTTPError:
                    status = 0
                self.results.append((status, time.monotonic() - start))
                done += 1
