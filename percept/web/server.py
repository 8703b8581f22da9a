"""Run the web app on a socket that is bound (and listening) before anything is announced.

uvicorn serves it with limits against clients that open connections and never finish a request:
a request's headers must arrive within ``header_timeout`` seconds of its first byte (or of the
connection), an idle kept-alive connection closes after ``keep_alive`` seconds, and beyond
``max_connections`` open connections new requests are answered 503.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from percept.errors import PerceptError

BACKLOG = 2048


@dataclass(frozen=True)
class ServerLimits:
    """How long a client may take to send a request's headers, or keep an idle connection, and how
    many connections are served at once."""

    header_timeout: float = 5.0
    keep_alive: int = 5
    max_connections: int = 1000


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free port); refuses a taken port or a bad host."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise PerceptError(f"cannot serve on host {host!r} ({exc.strerror}): give --host an address of "
                           "this machine, such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise PerceptError(f"cannot serve on {host}:{port} ({exc.strerror or exc}): choose another --port, "
                           "or stop the program using it") from None
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://host:port/`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def header_deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers take longer than ``seconds``
    from its first byte (or, on a new connection, from the connection)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.header_timer = self.loop.call_later(seconds, self.headers_too_slow)

        def data_received(self, data: bytes) -> None:
            if self.header_timer is None and self.conn.their_state is h11.IDLE:  # a next request begins
                self.header_timer = self.loop.call_later(seconds, self.headers_too_slow)
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self.stop_header_timer()

        def connection_lost(self, exc) -> None:
            self.stop_header_timer()
            super().connection_lost(exc)

        def stop_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_too_slow(self) -> None:
            self.header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol


def serve_socket(app, sock: socket.socket, limits: ServerLimits = ServerLimits()) -> None:
    """Serve ``app`` with uvicorn on an already listening socket until interrupted."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", http=header_deadline_protocol(limits.header_timeout),
                            timeout_keep_alive=limits.keep_alive, limit_concurrency=limits.max_connections)
    uvicorn.Server(config).run(sockets=[sock])
