"""``percept map``: scored places as a printable map (PNG, SVG or PDF) and/or GeoJSON with counts.

Input (``--rated``): CSV or Parquet with ``lon``/``lat`` (or ``longitude``/``latitude``)
columns in WGS84, GeoJSON points, or GeoJSON polygons with a score property
(gzip allowed, e.g. a published hexagon map). GeoJSON coordinates are read in
the CRS named by the file's ``crs`` member, else WGS84; ``--input-crs`` overrides
both (for a table it names the CRS of its ``lon``/``lat`` or ``x``/``y`` columns).
Coordinates that cannot be in that CRS are an error.

Points are aggregated into hexagons of ``--hex`` metres (edge length) or into H3
cells (``--grid h3:RES``). Polygons are drawn as given unless ``--hex`` or ``--grid
h3:RES`` is set, which aggregates their centroids. The map is drawn in the input's
CRS when that is projected (RD New stays RD New), else in the UTM zone of the data,
or in ``--crs``; GeoJSON output is in WGS84 for a WGS84 input, else in the map's CRS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from percept.cli.common import positive_int, stderr_messages
from percept.errors import PerceptError

GEOJSON_SUFFIXES = (".geojson", ".json")


def register(subparsers) -> None:
    from percept.study.maps import DEFAULT_CMAP, DEFAULT_HEX

    parser = subparsers.add_parser(
        "map", help="aggregate scored places into hexagons: a printable map (PNG/SVG/PDF) and/or GeoJSON",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rated", required=True, metavar="FILE",
                        help="scored places: CSV/Parquet with lon/lat, GeoJSON points or polygons (.gz allowed)")
    parser.add_argument("--category", required=True, help="category to map, e.g. walkability")
    parser.add_argument("--value", metavar="NAME",
                        help="column or property holding the score (default: the category name, "
                             "<category>_score, predicted_<category>, average_<category>, mean_<category>, "
                             "mean_<first letter>, or score)")
    parser.add_argument("--grid", default="hex", metavar="hex|h3:RES",
                        help="cells: flat-topped hexagons of --hex metres (default), or H3 cells of resolution "
                             "RES (0-15; 9 has ~200 m edges)")
    parser.add_argument("--hex", type=float, metavar="METRES",
                        help=f"hexagon edge length in metres (default {DEFAULT_HEX:g} for points; "
                             "polygons are drawn as given unless set)")
    parser.add_argument("--min-count", type=positive_int, default=1, metavar="N",
                        help="hide cells with fewer than N images (default 1: show all)")
    parser.add_argument("--crs", metavar="EPSG:XXXX",
                        help="projected CRS to draw in (default: the input's when projected, else its UTM zone)")
    parser.add_argument("--input-crs", metavar="EPSG:XXXX", help="CRS of the input coordinates (see above)")
    parser.add_argument("--cmap", default=DEFAULT_CMAP, metavar="NAME",
                        help=f"sequential matplotlib colour map (default {DEFAULT_CMAP}; cividis, magma, ... "
                             "red-green and rainbow maps are refused)")
    parser.add_argument("--range", default="1,5", metavar="data|LOW,HIGH",
                        help="colour range: fixed LOW,HIGH (default 1,5, the survey's scale, so maps compare) "
                             "or data (this map's minimum to maximum)")
    parser.add_argument("--basemap", metavar="FILE",
                        help="draw lines from a local vector file beneath: roads.gpkg, .geojson, .shp, or an "
                             "OpenStreetMap extract.osm.pbf (needs geopandas / pyrosm)")
    parser.add_argument("--title", help="map title (default: the category)")
    parser.add_argument("--out", required=True, nargs="+", metavar="FILE",
                        help="map.png, map.svg, map.pdf and/or map.geojson")
    parser.add_argument("--format", metavar="png,svg,pdf",
                        help="also write the map in these formats, named after the first --out file")
    parser.add_argument("--dpi", type=positive_int, default=300, help="resolution of PNG output (default 300)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    parser.set_defaults(run=run)


def outputs(out: list[str], formats: str | None) -> tuple[list[Path], list[Path]]:
    """(figure paths, GeoJSON paths) from ``--out`` and ``--format``."""
    from percept.study.maps import FIGURE_FORMATS

    figures, geojsons = [], []
    for text in out:
        path = Path(text)
        suffix = path.suffix.lower()
        if suffix in GEOJSON_SUFFIXES:
            geojsons.append(path)
        elif suffix.lstrip(".") in FIGURE_FORMATS:
            figures.append(path)
        else:
            raise PerceptError(f"--out {path}: give a .png, .svg, .pdf or .geojson file name")
    for kind in (formats.split(",") if formats else []):
        kind = kind.strip().lower()
        if kind not in FIGURE_FORMATS:
            raise PerceptError(f"--format takes png, svg and/or pdf (comma-separated), got {kind!r}")
        path = Path(out[0]).with_suffix(f".{kind}")
        if path not in figures:
            figures.append(path)
    return figures, geojsons


def run(args: argparse.Namespace) -> int:
    from percept.atomic import atomic_write_text
    from percept.study.hexgrid import parse_crs
    from percept.study.maps import (
        MapOptions,
        build_layer,
        check_cmap,
        layer_geojson,
        parse_grid,
        parse_range,
        render,
        save_figure,
    )
    from percept.study.places import read_places

    figures, geojsons = outputs(args.out, args.format)
    grid, resolution = parse_grid(args.grid)
    options = MapOptions(
        category=args.category, grid=grid, hex_size=args.hex, h3_resolution=resolution,
        crs=parse_crs(args.crs) if args.crs else None, cmap=check_cmap(args.cmap),
        value_range=parse_range(args.range), min_count=args.min_count, dpi=args.dpi)
    input_crs = parse_crs(args.input_crs, "--input-crs") if args.input_crs else None
    places = read_places(Path(args.rated), args.category, args.value, input_crs)
    layer = build_layer(places, options)
    for path in geojsons:
        atomic_write_text(path, json.dumps(layer_geojson(layer)) + "\n")
    if figures:
        import matplotlib.pyplot as plt

        basemap = None
        if args.basemap:
            from percept.study.basemap import load_basemap

            basemap = load_basemap(args.basemap, layer.crs, layer.bounds(), stderr_messages(False))
        fig = render(layer, options, basemap, args.title or "")
        for path in figures:
            save_figure(fig, path, options.dpi)
        plt.close(fig)
    if not args.quiet:
        written = ", ".join(map(str, figures + geojsons))
        print(f"{args.category}: {layer.note}; drawn in {layer.crs.name}; wrote {written}")
    return 0
