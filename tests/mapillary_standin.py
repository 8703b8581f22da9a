"""A loopback stand-in for Mapillary: z14 vector tiles, Graph API entities and image search, and signed
thumbnail URLs.

Tiles are real Mapbox Vector Tiles (layer ``image``, extent 4096, y downwards) built with the
mapbox-vector-tile package from the images given; tile math here is written out independently
of percept's. Entities and the ``/images?bbox=`` search answer only the fields asked for and need
``Authorization: OAuth TOKEN``; tiles need ``?access_token=TOKEN`` and, like Mapillary's tiles host,
refuse an Authorization header (403). Thumbnail URLs point at ``thumb_base_url`` (set it to a
second server, as Mapillary's thumbnails live on other hosts; the API's own URL by default) and
carry a signature that changes with every entity or search answer; images in ``expire_once``
answer 403 to the first signature handed out. Paths in ``busy_once`` answer 429 (Retry-After) once.
"""

from __future__ import annotations

import io
import json
import math
import threading
from collections import Counter
from dataclasses import dataclass

import mapbox_vector_tile
import numpy as np
from http_standin import Reply, Request
from PIL import Image

ZOOM = 14
EXTENT = 4096
TILE_PREFIX = "/maps/vtp/mly1_public/2/"


@dataclass(frozen=True)
class FakeImage:
    id: int
    lon: float
    lat: float
    captured_at: int
    compass_angle: float
    sequence_id: str
    is_pano: bool = False
    organization_id: int = 0
    computed_shift: float | None = 1e-5  # computed_geometry = geometry shifted north; None: not processed


def tile_of(lon: float, lat: float) -> tuple[float, float]:
    n = 2 ** ZOOM
    x = (lon + 180.0) / 360.0 * n
    y = (1.0 - math.log(math.tan(math.radians(lat)) + 1.0 / math.cos(math.radians(lat))) / math.pi) / 2.0 * n
    return x, y


def jpeg_for(image_id: int, size: str) -> bytes:
    pixels = (np.random.default_rng(image_id).random((30, 40, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=80 if size == "1024" else 95)
    return buffer.getvalue()


class MapillaryStandIn:
    """``respond`` for ``http_standin.StandIn``; ``base_url`` must be set once the server runs."""

    def __init__(self, images: list[FakeImage], token: str, expire_once=(), busy_once=(), forbidden_tiles=()):
        self.images = {str(image.id): image for image in images}
        self.token = token
        self.expire_once = {str(i) for i in expire_once}
        self.busy_once = set(busy_once)
        self.forbidden_tiles = set(forbidden_tiles)
        self.base_url = ""
        self.thumb_base_url = ""
        self.signatures: Counter = Counter()
        self.thumb_headers: list[dict] = []
        self.entity_fields: list[str] = []
        self.lock = threading.Lock()
        self.tiles = self._build_tiles()

    def _build_tiles(self) -> dict[tuple[int, int], bytes]:
        features: dict[tuple[int, int], list] = {}
        for image in self.images.values():
            x, y = tile_of(image.lon, image.lat)
            features.setdefault((int(x), int(y)), []).append({
                "geometry": {"type": "Point", "coordinates": [(x - int(x)) * EXTENT, (y - int(y)) * EXTENT]},
                "properties": {"id": image.id, "captured_at": image.captured_at, "compass_angle": image.compass_angle,
                               "sequence_id": image.sequence_id, "organization_id": image.organization_id,
                               "is_pano": image.is_pano}})
        return {xy: mapbox_vector_tile.encode({"name": "image", "features": found},
                                              default_options={"y_coord_down": True, "extents": EXTENT})
                for xy, found in features.items()}

    def __call__(self, request: Request) -> Reply:
        with self.lock:
            if request.path in self.busy_once:
                self.busy_once.discard(request.path)
                return Reply(429, b'{"error": "slow down"}', "application/json", {"Retry-After": "0.05"})
        if request.path.startswith(TILE_PREFIX):
            return self._tile(request)
        if request.path.startswith("/thumb/"):
            return self._thumbnail(request)
        if request.path == "/images":
            return self._search(request)
        return self._entity(request)

    def _tile(self, request: Request) -> Reply:
        if "authorization" in request.headers:
            return Reply(403, b'{"message": "tiles take the token as access_token only"}', "application/json")
        if request.query.get("access_token") != [self.token]:
            return Reply(401, b'{"message": "invalid token"}', "application/json")
        z, x, y = (int(part) for part in request.path[len(TILE_PREFIX):].split("/"))
        if (x, y) in self.forbidden_tiles:
            return Reply(403, b"", "text/plain")
        if z != ZOOM or (x, y) not in self.tiles:
            return Reply(404, b"", "text/plain")
        return Reply(body=self.tiles[(x, y)], content_type="application/x-protobuf")

    def _refused(self, request: Request) -> Reply | None:
        if request.headers.get("authorization") != f"OAuth {self.token}":
            return Reply(401, json.dumps({"error": {"message": "Invalid OAuth access token",
                                                    "type": "OAuthException", "code": 190}}).encode(),
                         "application/json")
        return None

    def _entity(self, request: Request) -> Reply:
        refused = self._refused(request)
        if refused:
            return refused
        image = self.images.get(request.path.strip("/"))
        if image is None:
            return Reply(404, b'{"error": {"message": "unknown image"}}', "application/json")
        fields = request.query.get("fields", [""])[0].split(",")
        with self.lock:
            self.entity_fields.append(",".join(fields))
        return Reply(body=json.dumps(self._fields(image, fields)).encode(), content_type="application/json")

    def _search(self, request: Request) -> Reply:
        """``/images?fields=...&bbox=W,S,E,N&limit=N``: the images inside the box (by their original point)."""
        refused = self._refused(request)
        if refused:
            return refused
        west, south, east, north = (float(v) for v in request.query["bbox"][0].split(","))
        fields = request.query.get("fields", [""])[0].split(",")
        limit = int(request.query.get("limit", ["2000"])[0])
        inside = [image for image in self.images.values() if west <= image.lon <= east and south <= image.lat <= north]
        data = [self._fields(image, fields) for image in inside[:limit]]
        return Reply(body=json.dumps({"data": data}).encode(), content_type="application/json")

    def _fields(self, image: FakeImage, fields: list[str]) -> dict:
        """The fields asked for of one image; thumbnail URLs get a fresh signature."""
        with self.lock:
            self.signatures[str(image.id)] += 1
            signature = self.signatures[str(image.id)]
        geometry = {"type": "Point", "coordinates": [image.lon, image.lat]}
        full = {
            "id": str(image.id), "geometry": geometry, "compass_angle": image.compass_angle,
            "captured_at": image.captured_at, "is_pano": image.is_pano, "sequence": image.sequence_id,
            "width": 40, "height": 30,
            **{f"thumb_{size}_url": f"{self.thumb_base_url or self.base_url}/thumb/{image.id}/{size}?sig={signature}"
               for size in ("256", "1024", "2048", "original")},
        }
        if image.computed_shift is not None:
            full["computed_geometry"] = {"type": "Point", "coordinates": [image.lon, image.lat + image.computed_shift]}
            full["computed_compass_angle"] = (image.compass_angle + 1.0) % 360
        return {name: full[name] for name in fields if name in full}

    def _thumbnail(self, request: Request) -> Reply:
        _, _, image_id, size = request.path.split("/")
        with self.lock:
            self.thumb_headers.append(request.headers)
            issued = self.signatures[image_id]
        signature = int(request.query.get("sig", ["0"])[0])
        if signature != issued or (image_id in self.expire_once and signature == 1):
            return Reply(403, b"URL signature expired", "text/plain")
        return Reply(body=jpeg_for(int(image_id), size))
