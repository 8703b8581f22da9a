"""Scored places for a map: points or polygons with a score, read from a table or GeoJSON, CRS checked.

Tables (CSV, Parquet) hold ``lon``/``lat`` (or ``longitude``/``latitude``, ``lng``/``lat``,
``x``/``y``) columns; GeoJSON holds Point or Polygon features (gzip allowed). GeoJSON
coordinates are in the CRS named by the file's ``crs`` member, else WGS84; an explicit
input CRS overrides both. Coordinates that cannot be in that CRS are an error.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer

from percept.data.crs import WGS84, parse_crs
from percept.errors import PerceptError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
COORDINATE_COLUMNS = (("lon", "lat"), ("longitude", "latitude"), ("lng", "lat"), ("x", "y"))
COUNT_KEYS = ("count", "n", "images")
#: Degrees (at least) by which points may lie outside a projected CRS's area of use.
AREA_MARGIN_DEG = 1.0


@dataclass
class Places:
    """Scored input: points (``x``, ``y``) or polygon outlines, in ``crs``; ``counts`` when the input had them."""

    crs: CRS
    values: np.ndarray
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    polygons: list[np.ndarray] | None = None
    counts: np.ndarray | None = None

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        if self.x is not None and self.y is not None:
            return self.x, self.y
        centres = np.array([ring[:-1].mean(axis=0) if len(ring) > 1 else ring[0] for ring in self.polygons or []])
        return centres[:, 0], centres[:, 1]

    def coordinates(self) -> np.ndarray:
        """(n, 2) every coordinate pair (points, or all polygon corners)."""
        if self.x is not None and self.y is not None:
            return np.column_stack([self.x, self.y])
        return np.concatenate(self.polygons or [])


def score_keys(category: str, value: str | None) -> list[str]:
    """The column or property names tried for the score, in order."""
    if value:
        return [value]
    return [category, f"{category}_score", f"predicted_{category}", f"average_{category}", f"mean_{category}",
            f"mean_{category[:1]}", "score"]


def read_places(path: Path, category: str, value: str | None = None, input_crs: CRS | None = None) -> Places:
    """Load scored points or polygons from a table or a GeoJSON file, and check their coordinates."""
    path = Path(path)
    if not path.exists():
        raise PerceptError(f"--rated {path} does not exist")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(TABLE_SUFFIXES):
        places = _read_table(path, category, value, input_crs or WGS84)
    else:
        places = _read_geojson(path, category, value, input_crs)
    check_coordinates(places, f"--rated {path}", explicit=input_crs is not None)
    return places


def check_coordinates(places: Places, source: str, explicit: bool = False) -> None:
    """Raise when the coordinates cannot be in ``places.crs``.

    Longitude/latitude must lie within ±180/±90; projected coordinates must map
    into the CRS's area of use (widened by ``AREA_MARGIN_DEG`` or a tenth of its size)
    for at least half the points.
    """
    xy = places.coordinates()
    finite = np.isfinite(xy).all(axis=1)
    if not finite.all():
        raise PerceptError(f"{source}: {int((~finite).sum())} coordinates are not numbers")
    crs = places.crs
    how = "the CRS given with --input-crs" if explicit else "the input's CRS"
    fix = "name the CRS the coordinates are in with --input-crs (e.g. EPSG:28992 for RD New, EPSG:4326 for lon/lat)"
    if crs.is_geographic:
        bad = (np.abs(xy[:, 0]) > 180) | (np.abs(xy[:, 1]) > 90)
        if bad.any():
            x, y = xy[np.argmax(bad)]
            raise PerceptError(f"{source}: coordinate ({x:g}, {y:g}) is not a longitude/latitude, but {how} is "
                               f"{_name(crs)}: {fix}")
        return
    area = crs.area_of_use
    if area is None:
        return
    lon, lat = Transformer.from_crs(crs, WGS84, always_xy=True).transform(xy[:, 0], xy[:, 1])
    lon, lat = np.asarray(lon), np.asarray(lat)
    margin_x = max(AREA_MARGIN_DEG, 0.1 * (area.east - area.west))
    margin_y = max(AREA_MARGIN_DEG, 0.1 * (area.north - area.south))
    inside = (np.isfinite(lon) & np.isfinite(lat) & (lon >= area.west - margin_x) & (lon <= area.east + margin_x)
              & (lat >= area.south - margin_y) & (lat <= area.north + margin_y))
    if inside.mean() < 0.5:
        x, y = xy[np.argmin(inside)]
        hint = " (they look like longitude/latitude)" if (np.abs(xy[:, 0]) <= 180).all() and (
            np.abs(xy[:, 1]) <= 90).all() else ""
        raise PerceptError(f"{source}: coordinates such as ({x:g}, {y:g}) lie outside the area of use of {how}, "
                           f"{_name(crs)}: {area.name.rstrip('.')}{hint}; {fix}")


def _name(crs: CRS) -> str:
    code = crs.to_epsg()
    return f"EPSG:{code} ({crs.name})" if code else crs.name


def _read_table(path: Path, category: str, value: str | None, crs: CRS) -> Places:
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except (OSError, ValueError, ImportError) as exc:
        raise PerceptError(f"cannot read --rated {path}: {exc}") from None
    keys = score_keys(category, value)
    column = next((c for c in keys if c in frame.columns), None)
    coords = next((pair for pair in COORDINATE_COLUMNS if set(pair) <= set(frame.columns)), None)
    if column is None or coords is None:
        raise PerceptError(f"--rated {path} needs lon/lat columns and a score column "
                           f"({' or '.join(keys)}); it has {', '.join(map(str, frame.columns))}")
    table = frame[[coords[0], coords[1], column]].apply(pd.to_numeric, errors="coerce").dropna()
    if table.empty:
        raise PerceptError(f"--rated {path} has no row with coordinates and a {column!r} score")
    return Places(crs, table[column].to_numpy(float), table[coords[0]].to_numpy(float),
                  table[coords[1]].to_numpy(float))


def _read_geojson(path: Path, category: str, value: str | None, input_crs: CRS | None) -> Places:
    try:
        raw = path.read_bytes()
        data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, ValueError, EOFError) as exc:
        raise PerceptError(f"cannot read --rated {path} as GeoJSON, CSV or Parquet: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise PerceptError(f"--rated {path} is not a GeoJSON FeatureCollection")
    crs = input_crs
    if crs is None:
        named = ((data.get("crs") or {}).get("properties") or {}).get("name")
        crs = parse_crs(named, f"{path}'s crs member") if named else WGS84
    keys = score_keys(category, value)
    points: list[list[float]] = []
    polygons: list[np.ndarray] = []
    values: list[float] = []
    counts: list[float] = []
    for feature in data["features"]:
        props = (feature.get("properties") if isinstance(feature, dict) else None) or {}
        geometry = (feature.get("geometry") if isinstance(feature, dict) else None) or {}
        key = next((k for k in keys if props.get(k) is not None), None)
        if key is None:
            continue
        kind, coords = geometry.get("type"), geometry.get("coordinates", [])
        try:
            if kind == "Point":
                points.append([float(coords[0]), float(coords[1])])
            elif kind == "Polygon":
                polygons.append(np.asarray(coords[0], dtype=np.float64)[:, :2])
            elif kind == "MultiPolygon":
                polygons.append(np.asarray(max(coords, key=lambda p: len(p[0]))[0], dtype=np.float64)[:, :2])
            else:
                continue
            values.append(float(props[key]))
        except (TypeError, ValueError, IndexError):
            raise PerceptError(f"--rated {path}: a {kind} feature has malformed coordinates or a non-numeric "
                               f"{key!r}") from None
        counts.append(next((props[k] for k in COUNT_KEYS if isinstance(props.get(k), (int, float))), np.nan))
    if points and polygons:
        raise PerceptError(f"--rated {path} mixes points and polygons: give one kind")
    if not values:
        raise PerceptError(f"--rated {path} has no Point or Polygon feature with a score property "
                           f"({' or '.join(keys)}); name it with --value")
    numbers = np.asarray(counts, dtype=np.float64)
    if points:
        xy = np.asarray(points, dtype=np.float64)
        return Places(crs, np.asarray(values), xy[:, 0], xy[:, 1])
    return Places(crs, np.asarray(values), polygons=polygons,
                  counts=None if np.isnan(numbers).any() else numbers.astype(np.int64))
