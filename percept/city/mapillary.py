"""Nearest street-level image from Mapillary's Graph API (v4), for map clicks without rated imagery,
and the rules that keep the access token with its host.

Search: ``GET {base}/images?fields=id,thumb_1024_url,computed_geometry&bbox=W,S,E,N&limit=N`` with the
header ``Authorization: OAuth <token>``; the answer is ``{"data": [{"id", "thumb_1024_url",
"computed_geometry": {"type": "Point", "coordinates": [lon, lat]}}, ...]}``.

The token goes in that header to the Graph API's origin only (scheme, host and port of the base
URL; httpx drops the header when a redirect leaves that origin). Thumbnails are signed URLs on
other hosts and are fetched by a second client that has no credentials; when the API is https,
a thumbnail over plain http is refused, redirects included. Messages never hold the token.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import httpx

from percept.city.spatial_index import EARTH_RADIUS_M, great_circle_m

DEFAULT_BASE_URL = "https://graph.mapillary.com"
TOKEN_ENV = "MAPILLARY_TOKEN"
SEARCH_LIMIT = 50
MAX_THUMBNAIL_BYTES = 8 * 1024 * 1024


class MapillaryError(Exception):
    """The Graph API could not be reached or answered something unexpected."""


def resolve_token(option: str | None) -> str | None:
    """The token from the option, else from ``MAPILLARY_TOKEN``; None (feature off) when neither is set."""
    token = option if option else os.environ.get(TOKEN_ENV)
    return token or None


def same_origin(url: httpx.URL, base: httpx.URL) -> bool:
    """Whether ``url`` has the scheme, host and port of ``base``."""
    return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)


class GraphApiAuth(httpx.Auth):
    """``Authorization: OAuth <token>`` on requests to the Graph API's origin, and on no other."""

    def __init__(self, token: str, base_url: str):
        self._header = f"OAuth {token}"
        self.base = httpx.URL(base_url)

    def __repr__(self) -> str:
        return f"GraphApiAuth({self.base.host!r})"

    def auth_flow(self, request: httpx.Request):
        if same_origin(request.url, self.base):
            request.headers["Authorization"] = self._header
        yield request


def plain_http_refused(api_url: str, url: str | httpx.URL) -> bool:
    """Whether a download from ``url`` is refused: the API is https and ``url`` is not."""
    return httpx.URL(api_url).scheme == "https" and httpx.URL(url).scheme != "https"


PLAIN_HTTP_REASON = "refused a plain-http download while the Mapillary API is https"


def redact(text: str, token: str) -> str:
    """``text`` with the token (as written or URL-encoded) replaced by ``***``."""
    from urllib.parse import quote, quote_plus

    for form in {token, quote(token, safe=""), quote_plus(token)}:
        text = text.replace(form, "***")
    return text


@dataclass(frozen=True)
class MapillaryImage:
    id: str
    thumb_url: str
    lon: float
    lat: float
    distance_m: float


def bbox_around(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(west, south, east, north) of a box holding the circle of ``radius_m`` around the point."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    dlon = math.degrees(radius_m / (EARTH_RADIUS_M * max(math.cos(math.radians(lat)), 1e-6)))
    return (max(lon - dlon, -180.0), max(lat - dlat, -90.0), min(lon + dlon, 180.0), min(lat + dlat, 90.0))


class MapillaryClient:
    """A small Graph API client: nearest image search (with the token) and thumbnail download (without)."""

    def __init__(self, token: str, base_url: str = DEFAULT_BASE_URL, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.api = httpx.Client(timeout=timeout, auth=GraphApiAuth(token, self.base_url), follow_redirects=True)
        self.downloads = httpx.Client(timeout=timeout, follow_redirects=True,
                                      event_hooks={"request": [self._refuse_plain_http]})

    def _refuse_plain_http(self, request: httpx.Request) -> None:
        if plain_http_refused(self.base_url, request.url):
            raise MapillaryError(f"Mapillary thumbnail not fetched: {PLAIN_HTTP_REASON}")

    def nearest_image(self, lat: float, lon: float, radius_m: float) -> MapillaryImage | None:
        """The image nearest to the point within ``radius_m`` metres, or None."""
        west, south, east, north = bbox_around(lat, lon, radius_m)
        params = {"fields": "id,thumb_1024_url,computed_geometry", "bbox": f"{west},{south},{east},{north}",
                  "limit": str(SEARCH_LIMIT)}
        try:
            response = self.api.get(f"{self.base_url}/images", params=params)
            response.raise_for_status()
            data = response.json().get("data")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise MapillaryError(f"Mapillary image search failed: {self._reason(exc)}") from None
        best = None
        for item in data if isinstance(data, list) else []:
            image = _parse(item, lat, lon)
            if image is not None and image.distance_m <= radius_m \
                    and (best is None or image.distance_m < best.distance_m):
                best = image
        return best

    def thumbnail(self, image: MapillaryImage) -> bytes:
        """The image's thumbnail bytes (at most MAX_THUMBNAIL_BYTES)."""
        try:
            with self.downloads.stream("GET", image.thumb_url) as response:
                response.raise_for_status()
                body = bytearray()
                for piece in response.iter_bytes():
                    body += piece
                    if len(body) > MAX_THUMBNAIL_BYTES:
                        raise MapillaryError("Mapillary thumbnail is too large")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise MapillaryError(f"Mapillary thumbnail download failed: {self._reason(exc)}") from None

    def _reason(self, exc: Exception) -> str:
        """Why a request failed, without its URL (which may be signed) or the token."""
        if isinstance(exc, httpx.HTTPStatusError):
            return f"HTTP {exc.response.status_code}"
        if isinstance(exc, httpx.TimeoutException):
            return "timed out"
        if isinstance(exc, httpx.HTTPError):
            return redact(f"{type(exc).__name__}: {exc}", self._token)
        return "the answer is not JSON with a data list"


def _parse(item: object, lat: float, lon: float) -> MapillaryImage | None:
    if not isinstance(item, dict):
        return None
    try:
        x, y = item["computed_geometry"]["coordinates"][:2]
        image_id, url = str(item["id"]), str(item["thumb_1024_url"])
        distance = float(great_circle_m(lat, lon, float(y), float(x)))
    except (KeyError, TypeError, ValueError):
        return None
    return MapillaryImage(image_id, url, float(x), float(y), distance)
