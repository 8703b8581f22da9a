"""``percept map``: scored places as a printable map (PNG, SVG or PDF) and/or GeoJSON with counts.

Input (``--rated``): a file written by ``percept rate`` (.csv, .parquet, .geoparquet or
.geojson, with locations); or any CSV or Parquet with ``lon``/``lat`` (or
``longitude``/``latitude``) columns in WGS84, GeoJSON points, or GeoJSON polygons with a
score property (gzip allowed, e.g. a published hexagon map). GeoJSON coordinates are read in
the CRS named by the file's ``crs`` member, else WGS84; ``--input-crs`` overrides both (for a
table it names the CRS of its ``lon``/``lat`` or ``x``/``y`` columns). Coordinates that
cannot be in that CRS are an error.

``--value`` picks what is mapped: the category's score (default), its spread (``sd``), the
width of its prediction interval (``width``, ``_hi - _lo``) or the share of images outside
the survey's domain (``out_of_domain``); each has its own title, legend, colour range and
colour map. Cells where more than ``--max-ood`` of the images lie outside the survey's domain
are greyed and hatched; cells with fewer than ``--min-count`` images are drawn as a dashed
outline without their value.

Points are aggregated into hexagons of ``--hex`` metres (edge length) or into H3
cells (``--grid h3:RES``). Polygons are drawn as given unless ``--hex`` or ``--grid
h3:RES`` is set, which aggregates their centroids. The map is drawn in the input's CRS
when that is projected (RD New stays RD New), else in the UTM zone of the data, or in
``--crs``; GeoJSON output is in WGS84 for a WGS84 input, else in the map's CRS, with each
cell's count, mean and spread of the value, mean interval width and out-of-domain share.

``--suggestions`` draws the images ``percept suggest`` picked for rating on top of the cells.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from percept.cli.common import positive_int, stderr_messages
from percept.errors import PerceptError
from percept.extras import require

GEOJSON_SUFFIXES = (".geojson", ".json")


def register(subparsers) -> None:
    from percept.study.map_values import DEFAULT_LEVEL, VALUES
    from percept.study.maps import DEFAULT_HEX, DEFAULT_MAX_OOD

    parser = subparsers.add_parser(
        "map", help="aggregate scored places into hexagons: a printable map (PNG/SVG/PDF) and/or GeoJSON",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rated", required=True, metavar="FILE",
                        help="scored places: a 'percept rate' output, CSV/Parquet with lon/lat, GeoJSON points "
                             "or polygons (.gz allowed)")
    parser.add_argument("--category", required=True, help="category to map, e.g. walkability")
    parser.add_argument("--value", default="score", metavar="|".join(VALUES),
                        help="what to map: the score (default), its spread (sd), its interval width (width) or "
                             "the share of images outside the survey's domain (out_of_domain); or the name of a "
                             "column or property holding scores (default: the category name, <category>_score, "
                             "predicted_<category>, average_<category>, mean_<category>, mean_<first letter>, "
                             "or score)")
    parser.add_argument("--grid", default="hex", metavar="hex|h3:RES",
                        help="cells: flat-topped hexagons of --hex metres (default), or H3 cells of resolution "
                             "RES (0-15; 9 has ~200 m edges)")
    parser.add_argument("--hex", type=float, metavar="METRES",
                        help=f"hexagon edge length in metres (default {DEFAULT_HEX:g} for points; "
                             "polygons are drawn as given unless set)")
    parser.add_argument("--min-count", type=positive_int, default=1, metavar="N",
                        help="draw cells with fewer than N images as an outline without their value, and leave "
                             "them out of the GeoJSON (default 1: show all)")
    parser.add_argument("--max-ood", type=float, default=DEFAULT_MAX_OOD, metavar="SHARE",
                        help=f"grey cells where more than this share of the images lie outside the survey's "
                             f"domain (default {DEFAULT_MAX_OOD:g}; 1 greys none)")
    parser.add_argument("--interval", type=float, default=None, metavar="LEVEL",
                        help=f"the coverage of the rated file's intervals, for --value width's title (default: "
                             f"the level the rated file records, else {DEFAULT_LEVEL:g})")
    parser.add_argument("--crs", metavar="EPSG:XXXX",
                        help="projected CRS to draw in (default: the input's when projected, else its UTM zone)")
    parser.add_argument("--input-crs", metavar="EPSG:XXXX", help="CRS of the input coordinates (see above)")
    parser.add_argument("--cmap", metavar="NAME",
                        help="sequential matplotlib colour map (default: viridis for scores, YlOrBr for spreads, "
                             "PuRd for widths, Blues for shares; red-green and rainbow maps are refused)")
    parser.add_argument("--range", metavar="auto|data|LOW,HIGH",
                        help="colour range: auto (default: 1-5 for scores, so maps compare; 0 to a round number "
                             "above the largest for spreads and widths; 0-100 for shares, in per cent), data "
                             "(this map's minimum to maximum) or a fixed LOW,HIGH in the value's units")
    parser.add_argument("--basemap", metavar="FILE",
                        help="draw lines from a local vector file beneath: roads.gpkg, .geojson, .shp, or an "
                             "OpenStreetMap extract.osm.pbf (needs geopandas / pyrosm)")
    parser.add_argument("--attribution", metavar="TEXT",
                        help="credit for the basemap's data, printed beneath the map (default for .osm.pbf "
                             "extracts: © OpenStreetMap contributors)")
    parser.add_argument("--suggestions", metavar="FILE.csv",
                        help="draw the images 'percept suggest' picked for rating on top of the cells, with a key "
                             "entry (those with a location; needs a .png, .svg or .pdf --out)")
    parser.add_argument("--title", help="map title (default: the value's, e.g. Walkability)")
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


def read_input(path: Path, options, input_crs):
    """(Places, PointValues or None) of ``--rated``: a 'percept rate' output with all its columns, else
    any scored table or GeoJSON (scores only)."""
    from percept.data.rated_points import NotRatedError, read_rated
    from percept.study.map_values import PointValues, rated_places
    from percept.study.places import read_places

    source = f"--rated {path}"
    if options.column is None and path.exists():
        try:
            rated = read_rated(path)
        except NotRatedError:
            rated = None
        if rated is not None:
            points = PointValues.of_rated(rated, options.category, source)
            return rated_places(rated.lon, rated.lat, points, options.value, source, input_crs)
    if options.value != "score":
        raise PerceptError(f"--value {options.value} needs a file written by 'percept rate' (with its image, "
                           f"{options.category}_sd, _lo/_hi and out_of_domain columns); {source} is not one")
    return read_places(path, options.category, options.column, input_crs), None


def suggestion_points(path: str | None, figures: list[Path]):
    """The located images of a ``percept suggest`` CSV as (n, 2) WGS84 lon, lat rows (None without one)."""
    if path is None:
        return None
    if not figures:
        raise PerceptError("--suggestions draws points on a map figure: add a .png, .svg or .pdf file to --out")
    from percept.city.suggest_io import read_suggestions

    table = read_suggestions(path)
    located = table[table["lon"].notna() & table["lat"].notna()]
    if located.empty:
        raise PerceptError(f"--suggestions {path} gives no image a location: run 'percept suggest' with "
                           "--locations FILE")
    return located[["lon", "lat"]].to_numpy(dtype=float)


def run(args: argparse.Namespace) -> int:
    require("maps", "matplotlib", "percept map")
    from percept.atomic import atomic_write_text
    from percept.data.crs import parse_crs
    from percept.data.rated_points import rated_metadata
    from percept.study.basemap import attribution
    from percept.study.map_values import DEFAULT_LEVEL, parse_value
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

    figures, geojsons = outputs(args.out, args.format)
    suggestions = suggestion_points(args.suggestions, figures)
    recorded = rated_metadata(args.rated)
    level = args.interval or recorded.get("interval_level") or DEFAULT_LEVEL
    grid, resolution = parse_grid(args.grid)
    value, column = parse_value(args.value, args.category)
    options = MapOptions(
        category=args.category, value=value, column=column, grid=grid, hex_size=args.hex,
        h3_resolution=resolution, crs=parse_crs(args.crs) if args.crs else None, cmap=check_cmap(args.cmap),
        value_range=parse_range(args.range), min_count=args.min_count, max_ood=args.max_ood,
        interval_level=level, dpi=args.dpi)
    input_crs = parse_crs(args.input_crs, "--input-crs") if args.input_crs else None
    places, points = read_input(Path(args.rated), options, input_crs)
    layer = build_layer(places, options, points)
    for path in geojsons:
        atomic_write_text(path, json.dumps(layer_geojson(layer, recorded.get("model_card"))) + "\n")
    if figures:
        import matplotlib.pyplot as plt

        basemap = None
        if args.basemap:
            from percept.study.basemap import load_basemap

            basemap = load_basemap(args.basemap, layer.crs, layer.bounds(), stderr_messages(False))
        fig = render(layer, options, basemap, args.title or "", attribution(args.basemap, args.attribution),
                     recorded.get("model_card"), suggestions)
        for path in figures:
            save_figure(fig, path, options.dpi)
        plt.close(fig)
    if not args.quiet:
        written = ", ".join(map(str, figures + geojsons))
        print(f"{args.category} ({layer.spec.name}): {layer.note}; drawn in {layer.crs.name}; wrote {written}")
    return 0
