"""Security headers on every response, and no writes from other sites.

Every response gets a Content-Security-Policy (unless its route set its own), with
``frame-ancestors 'none'``, and ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``
and ``Referrer-Policy: same-origin``. The page's policy allows scripts, styles and fonts from
this server only (no inline script), images from this server, ``data:`` and ``blob:`` URLs, the
basemap's tile host and Mapillary's image hosts, and requests to this server only.

A request that can change something (anything but GET, HEAD and OPTIONS) must come from this
server's own page: its ``Origin``, when it has one, must name the host the request was sent to.
Browsers always send ``Origin`` with cross-site POSTs, so another site cannot make a visitor's
browser post to a server running on their machine; scripts and ``curl`` send none and are served.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

PLACEHOLDER = re.compile(r"[{}*]")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Where Mapillary serves its thumbnails (the Graph API's ``thumb_1024_url``).
MAPILLARY_IMAGE_HOSTS = ("https://*.fbcdn.net", "https://*.mapillary.com")
FIXED_HEADERS = ((b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
                 (b"referrer-policy", b"same-origin"))
#: The API docs pages: scripts from this server only; Redoc needs inline styles and a blob: worker.
DOCS_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
               "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def source_of(url: str) -> str | None:
    """A CSP source for the host of a URL or tile URL template: ``https://{s}.tile.example/{z}/{x}/{y}.png``
    → ``https://*.tile.example``; just the scheme when a placeholder sits deeper in the host; None for a
    URL without an http(s) host."""
    scheme, separator, rest = url.strip().partition("://")
    scheme = scheme.lower()
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1].lower()
    if not separator or scheme not in DEFAULT_PORTS or not host:
        return None
    first, dot, others = host.partition(".")
    if PLACEHOLDER.search(first):
        first = "*"
    if PLACEHOLDER.search(others) or (first == "*" and not others):
        return f"{scheme}:"
    return f"{scheme}://{first}{dot}{others}"


def page_policy(image_sources: tuple[str, ...] = ()) -> str:
    """The page's Content-Security-Policy, allowing images from ``image_sources`` as well."""
    images = " ".join(("'self'", "data:", "blob:", *dict.fromkeys(image_sources)))
    return (f"default-src 'self'; script-src 'self'; style-src 'self'; img-src {images}; font-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def image_sources(tile_url: str | None, mapillary_url: str | None) -> tuple[str, ...]:
    """The image hosts the page loads from besides this server: the basemap's tiles and, with Mapillary,
    its thumbnail hosts and the Graph API's own host."""
    found = [source_of(tile_url)] if tile_url else []
    if mapillary_url:
        found += [*MAPILLARY_IMAGE_HOSTS, source_of(mapillary_url)]
    return tuple(source for source in found if source)


def authority(value: str, scheme: str) -> str:
    """``host:port`` in lower case with the scheme's default port made explicit (``a.org`` → ``a.org:80``)."""
    host = value.strip().lower().rstrip(".")
    if host.endswith("]") or ":" not in host:
        return f"{host}:{DEFAULT_PORTS.get(scheme, 80)}"
    return host


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """Whether a request with this ``Origin`` header may write to the server it reached at ``Host``
    (no Origin: yes; ``null`` or another host: no)."""
    if origin is None:
        return True
    parts = urlsplit(origin.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc or host is None:
        return False
    return authority(parts.netloc, parts.scheme) in (authority(host, parts.scheme), authority(host, scheme))


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, and 403 for writes from other origins."""

    def __init__(self, app, policy: str):
        self.app, self.policy = app, policy.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers") or []}
        if scope["method"] not in SAFE_METHODS and not same_origin(headers.get(b"origin"), headers.get(b"host"),
                                                                   scope.get("scheme", "http")):
            return await self.refuse(send, headers.get(b"origin"))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [pair for pair in FIXED_HEADERS if pair[0] not in present]
                if b"content-security-policy" not in present:
                    added.append((b"content-security-policy", self.policy))
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)

    async def refuse(self, send, origin: str) -> None:
        detail = (f"this server accepts uploads only from its own page, not from a page at {origin[:200]!r}: "
                  "open the Image Demo on this server, or send the request without an Origin header")
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), *FIXED_HEADERS,
                                (b"content-security-policy", self.policy)]})
        await send({"type": "http.response.body", "body": body})
