"""A scriptable HTTP server on 127.0.0.1 for download tests: slow answers, error statuses, cut bodies.

``StandIn(respond)`` serves in a background thread; ``respond(request)`` returns a ``Reply`` for each
request. ``Scripted`` answers each path with its list of replies in turn (the last one repeats).
Every request is recorded (path, query, headers, time) so tests can count and inspect them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Reply:
    """One answer. ``delay`` waits before the headers; ``stall`` waits halfway through the body;
    ``declared_length`` above ``len(body)`` announces more bytes than are sent, then closes."""

    status: int = 200
    body: bytes = b""
    content_type: str = "image/jpeg"
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    stall: float = 0.0
    declared_length: int | None = None


@dataclass(frozen=True)
class Request:
    path: str
    query: dict
    headers: dict
    time: float


class Scripted:
    """Replies per path, one list each, given in order; the last reply repeats; unknown paths get 404."""

    def __init__(self, routes: dict[str, list[Reply]]):
        self.routes = routes
        self.seen: Counter = Counter()
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        with self.lock:
            replies = self.routes.get(request.path)
            number = self.seen[request.path]
            self.seen[request.path] += 1
        if not replies:
            return Reply(404, b"not found", "text/plain")
        return replies[min(number, len(replies) - 1)]


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that time out or are killed leave broken pipes behind


class StandIn:
    """A threaded HTTP server on a free loopback port; use as a context manager."""

    def __init__(self, respond: Callable[[Request], Reply]):
        self.respond = respond
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.server = QuietServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for request in self.requests if request.path == path)

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server hook
                parts = urlsplit(self.path)
                request = Request(parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()},
                                  time.monotonic())
                with standin.lock:
                    standin.requests.append(request)
                reply = standin.respond(request)
                time.sleep(reply.delay)
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                length = reply.declared_length if reply.declared_length is not None else len(reply.body)
                self.send_header("Content-Length", str(length))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if length != len(reply.body):
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                half = len(reply.body) // 2
                self.wfile.write(reply.body[:half])
                if reply.stall:
                    self.wfile.flush()
                    time.sleep(reply.stall)
                self.wfile.write(reply.body[half:])
                self.wfile.flush()

            def log_message(self, *args):
                pass
        return Handler
