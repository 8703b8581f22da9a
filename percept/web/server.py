"""Run the web app on a socket that is bound (and listening) before anything is announced."""

from __future__ import annotations

import socket

from percept.errors import PerceptError

BACKLOG = 2048


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


def serve_socket(app, sock: socket.socket) -> None:
    """Serve ``app`` with uvicorn on an already listening socket until interrupted."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
