"""Refuse requests whose Host header names another server (DNS rebinding protection).

A web page on another site can make a browser send requests to this server through a domain
name that resolves to it; such requests carry that domain in ``Host``. The server answers
only to the host it is bound to, loopback names when it is bound to loopback, IP literals when
it is bound to every interface, and names given with ``--allow-host``.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
STATUS = 421


def host_name(header: str) -> str:
    """The host part of a Host header value, lower case: ``[::1]:8000`` → ``::1``, ``A.org.:80`` → ``a.org``."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


@dataclass(frozen=True)
class HostPolicy:
    """The names a server answers to; ``any_ip`` admits every IP literal (bound to all interfaces)."""

    names: frozenset[str]
    any_ip: bool = False

    @classmethod
    def for_binding(cls, bound: str, allowed: tuple[str, ...] = ()) -> HostPolicy:
        bound = host_name(bound) if bound not in WILDCARDS else bound
        names = {bound, *(host_name(name) for name in allowed)} - {""}
        address = _ip(bound)
        if bound == "localhost" or (address is not None and address.is_loopback):
            names |= LOOPBACK_NAMES
        wildcard = bound in WILDCARDS
        if wildcard:
            names |= LOOPBACK_NAMES
        return cls(frozenset(names), any_ip=wildcard)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this Host header (None: no header) is answered."""
        if header is None or "*" in self.names:
            return True
        name = host_name(header)
        return name in self.names or (self.any_ip and _ip(name) is not None)


class HostCheck:
    """ASGI middleware answering 421 to requests for hosts the policy does not allow."""

    def __init__(self, app, policy: HostPolicy):
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"host")
        header = raw.decode("latin-1") if raw is not None else None
        if self.policy.allows(header):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        known = ", ".join(sorted(self.policy.names))
        detail = (f"this server answers to {known}, not to the host {host_name(header)!r}: start percept serve "
                  f"with --allow-host {host_name(header)} to reach it under that name")
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": STATUS,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
