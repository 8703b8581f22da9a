"""``percept serve`` in a process of its own, for tests that measure the server from outside.

Run as ``python tests/web_server.py <percept serve arguments>``. The app is wrapped so that
``GET /__received`` lists, for every request so far, the request body bytes the server handed
to the app and the largest single piece among them.
"""

from __future__ import annotations

import json
import sys

from percept.cli.main import build_parser
from percept.cli.serve import build_app
from percept.web.server import bind_socket, serve_socket, socket_url

RECEIVED_PATH = "/__received"


class CountBodies:
    """ASGI wrapper counting the body bytes each request's app received."""

    def __init__(self, app):
        self.app, self.requests = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == RECEIVED_PATH:
            body = json.dumps(self.requests).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            return await send({"type": "http.response.body", "body": body})
        record = {"path": scope["path"], "received": 0, "largest": 0}
        self.requests.append(record)

        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                record["received"] += size
                record["largest"] = max(record["largest"], size)
            return message

        return await self.app(scope, counted, send)


def main(argv: list[str]) -> None:
    args = build_parser(["serve"]).parse_args(["serve", *argv])
    app = CountBodies(build_app(args))
    sock = bind_socket(args.host, args.port)
    print(f"serving on {socket_url(sock)}", file=sys.stderr, flush=True)
    serve_socket(app, sock)


if __name__ == "__main__":
    main(sys.argv[1:])
