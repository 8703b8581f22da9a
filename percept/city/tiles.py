"""Mapillary coverage tiles: which z14 tiles cover an area, and the images one tile holds.

Tiles follow the web-mercator XYZ scheme. A Mapillary Vector Tile's ``image`` layer (zoom 14
only) has one Point per image in tile-local coordinates: 0..extent, x to the east, y downwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from percept.errors import PerceptError
from percept.extras import require

ZOOM = 14
IMAGE_LAYER = "image"
MAX_LATITUDE = 85.0511287798066


@dataclass(frozen=True)
class Bbox:
    west: float
    south: float
    east: float
    north: float

    def contains(self, lon: float, lat: float) -> bool:
        return self.west <= lon <= self.east and self.south <= lat <= self.north


@dataclass(frozen=True)
class CoverageImage:
    """One image as a coverage tile lists it; ``captured_at`` in milliseconds since the epoch."""

    id: str
    lon: float
    lat: float
    captured_at: int
    compass_angle: float | None
    sequence: str
    is_pano: bool


def parse_bbox(text: str) -> Bbox:
    """``W,S,E,N`` in degrees → a Bbox; PerceptError naming the problem otherwise."""
    try:
        west, south, east, north = (float(part) for part in text.split(","))
    except ValueError:
        raise PerceptError(f"--bbox needs four numbers W,S,E,N (degrees), got {text!r}") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise PerceptError(f"--bbox {text!r} must have west < east within [-180, 180] and south < north "
                           f"within [-90, 90]")
    return Bbox(west, south, east, north)


def tile_xy(lon: float, lat: float, zoom: int = ZOOM) -> tuple[float, float]:
    """Fractional tile coordinates of a point (x grows eastwards, y southwards)."""
    n = 2 ** zoom
    lat = max(min(lat, MAX_LATITUDE), -MAX_LATITUDE)
    x = (lon + 180.0) / 360.0 * n
    y = (1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n
    return x, y


def tile_lonlat(x: float, y: float, zoom: int = ZOOM) -> tuple[float, float]:
    """The point at fractional tile coordinates (inverse of ``tile_xy``)."""
    n = 2 ** zoom
    lon = x / n * 360.0 - 180.0
    lat = math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * y / n))))
    return lon, lat


def tiles_covering(bbox: Bbox, zoom: int = ZOOM) -> list[tuple[int, int]]:
    """Every (x, y) tile that overlaps the box, row by row."""
    last = 2 ** zoom - 1
    x0, y0 = tile_xy(bbox.west, bbox.north, zoom)
    x1, y1 = tile_xy(bbox.east, bbox.south, zoom)
    xs = range(max(int(x0), 0), min(int(x1), last) + 1)
    ys = range(max(int(y0), 0), min(int(y1), last) + 1)
    return [(x, y) for y in ys for x in xs]


def decode_image_tile(data: bytes, x: int, y: int, zoom: int = ZOOM) -> list[CoverageImage]:
    """The images in one tile's ``image`` layer, with their positions in degrees."""
    mapbox_vector_tile = require("city", "mapbox_vector_tile", "reading Mapillary tiles")
    try:
        layers = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})
    except Exception as exc:  # the decoder raises protobuf's and its own error types
        raise ValueError(f"not a vector tile ({type(exc).__name__}: {exc})") from None
    layer = layers.get(IMAGE_LAYER)
    if not layer:
        return []
    extent = float(layer.get("extent", 4096))
    images = []
    for feature in layer.get("features", []):
        geometry, props = feature.get("geometry") or {}, feature.get("properties") or {}
        if geometry.get("type") != "Point" or "id" not in props:
            continue
        px, py = geometry["coordinates"][:2]
        lon, lat = tile_lonlat(x + px / extent, y + py / extent, zoom)
        angle = props.get("compass_angle")
        images.append(CoverageImage(
            id=str(props["id"]), lon=lon, lat=lat, captured_at=int(props.get("captured_at") or 0),
            compass_angle=float(angle) if angle is not None else None,
            sequence=str(props.get("sequence_id") or ""), is_pano=bool(props.get("is_pano", False))))
    return images
