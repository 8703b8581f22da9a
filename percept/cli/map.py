"""``percept map``: scored places as a hexagon map (PNG with a colour legend, and/or GeoJSON).

Input (``--rated``): CSV or Parquet with ``lon``/``lat`` (or ``longitude``/``latitude``)
columns in WGS84, GeoJSON points, or GeoJSON polygons with a score property
(gzip allowed, e.g. a published hexagon map). GeoJSON coordinates are read in
the CRS named by the file's ``crs`` member, else WGS84; ``--input-crs`` overrides
both (for a table it names the CRS of its ``lon``/``lat`` or ``x``/``y`` columns).

Points are aggregated into hexagons of ``--hex`` metres (edge length) in a
metric CRS: the UTM zone of the data's centroid, or ``--crs``. Polygons are drawn
as given unless ``--hex`` is set, which aggregates their centroids. GeoJSON
output is in WGS84 longitude/latitude; the PNG is drawn in the metric CRS.
"""

from __future__ import annotations

import argparse
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from percept.errors import PerceptError

DEFAULT_HEX = 150.0
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
PNG_SUFFIXES = (".png",)
GEOJSON_SUFFIXES = (".geojson", ".json")
COORDINATE_COLUMNS = (("lon", "lat"), ("longitude", "latitude"), ("lng", "lat"), ("x", "y"))


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "map", help="aggregate scored places into hexagons: PNG map and/or GeoJSON",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rated", required=True, metavar="FILE",
                        help="scored places: CSV/Parquet with lon/lat, GeoJSON points or polygons (.gz allowed)")
    parser.add_argument("--category", required=True, help="category to map, e.g. walkability")
    parser.add_argument("--value", metavar="NAME",
                        help="column or property holding the score (default: the category name, "
                             "<category>_score, predicted_<category>, average_<category>, mean_<category>, "
                             "mean_<first letter>, or score)")
    parser.add_argument("--hex", type=float, metavar="METRES",
                        help=f"hexagon edge length in metres (default {DEFAULT_HEX:g} for points; "
                             "polygons are drawn as given unless set)")
    parser.add_argument("--crs", metavar="EPSG:XXXX", help="metric CRS for the hexagons (default: UTM zone of the data)")
    parser.add_argument("--input-crs", metavar="EPSG:XXXX", help="CRS of the input coordinates (see above)")
    parser.add_argument("--out", required=True, nargs="+", metavar="FILE", help="map.png and/or map.geojson")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    parser.set_defaults(run=run)


@dataclass
class Places:
    """Scored input: points (``x``, ``y``) or polygon outlines, in ``crs``."""

    crs: object
    values: np.ndarray
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    polygons: list[np.ndarray] | None = None

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        if self.polygons is None:
            return self.x, self.y
        centres = np.array([ring[:-1].mean(axis=0) if len(ring) > 1 else ring[0] for ring in self.polygons])
        return centres[:, 0], centres[:, 1]


def run(args: argparse.Namespace) -> int:
    from percept.study.hexgrid import (
        WGS84,
        aggregate_lonlat,
        parse_crs,
        to_geojson,
        to_lonlat,
        utm_crs,
    )

    outputs = [Path(p) for p in args.out]
    for path in outputs:
        if path.suffix.lower() not in PNG_SUFFIXES + GEOJSON_SUFFIXES:
            raise PerceptError(f"--out {path}: give a .png or .geojson file name")
    input_crs = parse_crs(args.input_crs, "--input-crs") if args.input_crs else None
    metric_crs = parse_crs(args.crs) if args.crs else None
    places = read_places(Path(args.rated), args.category, args.value, input_crs, WGS84)
    x, y = places.centroids()
    lon, lat = to_lonlat(x, y, places.crs)
    if places.polygons is None or args.hex is not None:
        grid = aggregate_lonlat(lon, lat, places.values, DEFAULT_HEX if args.hex is None else args.hex, metric_crs)
        shapes, values = grid.corners(), grid.mean
        collection = to_geojson(grid, args.category)
        note = f"{len(places.values)} places in {len(values)} hexagons of {grid.size:g} m"
        metric_crs = grid.crs
    else:
        from pyproj import Transformer

        metric_crs = metric_crs or utm_crs(float(np.mean(lon)), float(np.mean(lat)))
        stacked = np.concatenate(places.polygons)
        mx, my = Transformer.from_crs(places.crs, metric_crs, always_xy=True).transform(stacked[:, 0], stacked[:, 1])
        shapes = np.split(np.column_stack([mx, my]), np.cumsum([len(r) for r in places.polygons])[:-1])
        values = places.values
        collection = _polygon_geojson(places, args.category)
        note = f"{len(values)} polygons"
    for path in outputs:
        if path.suffix.lower() in PNG_SUFFIXES:
            write_png(path, shapes, values, args.category, metric_crs, note)
        else:
            from percept.atomic import atomic_write_text

            atomic_write_text(path, json.dumps(collection) + "\n")
    if not args.quiet:
        print(f"{args.category}: {note}; wrote {', '.join(map(str, outputs))}")
    return 0


def read_places(path: Path, category: str, value: str | None, input_crs, default_crs) -> Places:
    """Load scored points or polygons from a table or a GeoJSON file."""
    if not path.exists():
        raise PerceptError(f"--rated {path} does not exist")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(TABLE_SUFFIXES):
        return _read_table(path, category, value, input_crs or default_crs)
    return _read_geojson(path, category, value, input_crs, default_crs)


def _candidates(category: str, value: str | None) -> list[str]:
    if value:
        return [value]
    return [category, f"{category}_score", f"predicted_{category}", f"average_{category}", f"mean_{category}",
            f"mean_{category[:1]}", "score"]


def _read_table(path: Path, category: str, value: str | None, crs) -> Places:
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except (OSError, ValueError, ImportError) as exc:
        raise PerceptError(f"cannot read --rated {path}: {exc}") from None
    column = next((c for c in _candidates(category, value) if c in frame.columns), None)
    coords = next((pair for pair in COORDINATE_COLUMNS if set(pair) <= set(frame.columns)), None)
    if column is None or coords is None:
        raise PerceptError(f"--rated {path} needs lon/lat columns and a score column "
                           f"({' or '.join(_candidates(category, value))}); it has {', '.join(map(str, frame.columns))}")
    table = frame[[coords[0], coords[1], column]].apply(pd.to_numeric, errors="coerce").dropna()
    if table.empty:
        raise PerceptError(f"--rated {path} has no row with coordinates and a {column!r} score")
    return Places(crs, table[column].to_numpy(float), table[coords[0]].to_numpy(float), table[coords[1]].to_numpy(float))


def _read_geojson(path: Path, category: str, value: str | None, input_crs, default_crs) -> Places:
    from percept.study.hexgrid import parse_crs

    try:
        raw = path.read_bytes()
        data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, ValueError, EOFError) as exc:
        raise PerceptError(f"cannot read --rated {path} as GeoJSON, CSV or Parquet: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise PerceptError(f"--rated {path} is not a GeoJSON FeatureCollection")
    crs = input_crs
    if crs is None:
        named = (data.get("crs") or {}).get("properties", {}).get("name")
        crs = parse_crs(named, f"{path}'s crs member") if named else default_crs
    keys = _candidates(category, value)
    points, polygons, values = [], [], []
    for feature in data["features"]:
        props = feature.get("properties") or {}
        geometry = feature.get("geometry") or {}
        key = next((k for k in keys if props.get(k) is not None), None)
        if key is None:
            continue
        kind, coords = geometry.get("type"), geometry.get("coordinates")
        if kind == "Point":
            points.append(coords[:2])
        elif kind == "Polygon":
            polygons.append(np.asarray(coords[0], dtype=float)[:, :2])
        elif kind == "MultiPolygon":
            polygons.append(np.asarray(max(coords, key=lambda p: len(p[0]))[0], dtype=float)[:, :2])
        else:
            continue
        values.append(float(props[key]))
    if points and polygons:
        raise PerceptError(f"--rated {path} mixes points and polygons: give one kind")
    if not values:
        raise PerceptError(f"--rated {path} has no Point or Polygon feature with a score property "
                           f"({' or '.join(keys)}); name it with --value")
    if points:
        xy = np.asarray(points, dtype=float)
        return Places(crs, np.asarray(values), xy[:, 0], xy[:, 1])
    return Places(crs, np.asarray(values), polygons=polygons)


def _polygon_geojson(places: Places, category: str) -> dict:
    from percept.study.hexgrid import to_lonlat

    stacked = np.concatenate(places.polygons)
    lon, lat = to_lonlat(stacked[:, 0], stacked[:, 1], places.crs)
    rings = np.split(np.column_stack([lon, lat]).round(7), np.cumsum([len(r) for r in places.polygons])[:-1])
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {category: float(value)},
         "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]}}
        for ring, value in zip(rings, places.values)]}


def write_png(path: Path, shapes, values: np.ndarray, category: str, crs, note: str) -> None:
    """Filled shapes coloured by score, with a colour bar as the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from percept.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(9, 8))
    collection = PolyCollection([np.asarray(s) for s in shapes], array=np.asarray(values), cmap="RdYlGn",
                                edgecolors="white", linewidths=0.2)
    ax.add_collection(collection)
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.set_xlabel("easting (m)")
    ax.set_ylabel("northing (m)")
    ax.set_title(f"{category} — {note}\n{crs.name}", fontsize=10)
    fig.colorbar(collection, ax=ax, shrink=0.8, label=f"mean {category} score")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
