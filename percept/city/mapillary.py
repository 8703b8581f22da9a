"""Nearest street-level image from Mapillary's Graph API (v4), for map clicks without rated imagery.

Search: ``GET {base}/images?fields=id,thumb_1024_url,computed_geometry&bbox=W,S,E,N&limit=N`` with the
header ``Authorization: OAuth <token>``; the answer is ``{"data": [{"id", "thumb_1024_url",
"computed_geometry": {"type": "Point", "coordinates": [lon, lat]}}, ...]}``.
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


@dataclass(frozen=True)
class MapillaryImage:
    id: str
    thumb_url: str
    lon: float
    lat: float
    distance_m: float


def resolve_token(option: str | None) -> str | None:
    """The token from the option, else from ``MAPILLARY_TOKEN``; None (feature off) when neither is set."""
    token = option if option else os.environ.get(TOKEN_ENV)
    return token or None


def bbox_around(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(west, south, east, north) of a box holding the circle of ``radius_m`` around the point."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    dlon = math.degrees(radius_m / (EARTH_RADIUS_M * max(math.cos(math.radians(lat)), 1e-6)))
    return (max(lon - dlon, -180.0), max(lat - dlat, -90.0), min(lon + dlon, 180.0), min(lat + dlat, 90.0))


class MapillaryClient:
    """A small Graph API client: nearest image search and thumbnail download."""

    def __init__(self, token: str, base_url: str = DEFAULT_BASE_URL, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(timeout=timeout, headers={"Authorization": f"OAuth {token}"},
                                 follow_redirects=True)

    def nearest_image(self, lat: float, lon: float, radius_m: float) -> MapillaryImage | None:
        """The image nearest to the point within ``radius_m`` metres, or None."""
        west, south, east, north = bbox_around(lat, lon, radius_m)
        params = {"fields": "id,thumb_1024_url,computed_geometry", "bbox": f"{west},{south},{east},{north}",
                  "limit": str(SEARCH_LIMIT)}
        try:
            response = self.http.get(f"{self.base_url}/images", params=params)
            response.raise_for_status()
            data = response.json().get("data")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise MapillaryError(f"Mapillary image search failed: {exc}") from None
        best = None
        for item in data if isinstance(data, list) else []:
            image = _parse(item, lat, lon)
            if image is not None and image.distance_m <= radius_m and (best is None or image.distance_m < best.distance_m):
                best = image
        return best

    def thumbnail(self, image: MapillaryImage) -> bytes:
        """The image's thumbnail bytes (at most MAX_THUMBNAIL_BYTES)."""
        try:
            with self.http.stream("GET", image.thumb_url) as response:
                response.raise_for_status()
                body = bytearray()
                for piece in response.iter_bytes():
                    body += piece
                    if len(body) > MAX_THUMBNAIL_BYTES:
                        raise MapillaryError("Mapillary thumbnail is too large")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise MapillaryError(f"Mapillary thumbnail download failed: {exc}") from None


def _parse(item: object, lat: float, lon: float) -> MapillaryImage | None:
    try:
        x, y = item["computed_geometry"]["coordinates"][:2]
        image_id, url = str(item["id"]), str(item["thumb_1024_url"])
        distance = float(great_circle_m(lat, lon, float(y), float(x)))
    except (KeyError, TypeError, ValueError):
        return None
    return MapillaryImage(image_id, url, float(x), float(y), distance)
