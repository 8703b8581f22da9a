"""``percept environment``: the environmental variables of places, computed from an OpenStreetMap extract."""

from __future__ import annotations

import sys
import time

from percept.cli.common import positive_int
from percept.extras import require


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "environment", help="compute the 76 environmental variables of places from an OpenStreetMap extract",
        description="For every point: points of interest in eight categories (count, density or green share, "
                    "entropy of sub-types) and street network measures (nodes, edges, street counts, lengths, "
                    "orientation entropy, median speed; walk and bike network lengths) within each buffer, "
                    "read offline from a local .osm.pbf extract. Writes the input features with the variables "
                    "added (.geojson), ready for clip_retrieval_knn --environmental, or a table (.csv) for "
                    "percept rate --environment.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-g", "--geojson", metavar="FILE",
                        help="GeoJSON of Point features, e.g. a survey's data.geojson")
    source.add_argument("--locations", metavar="FILE", help="locations CSV or GeoJSON (image, lon, lat), e.g. "
                                                            "of imagery to rate")
    parser.add_argument("--osm", required=True, metavar="EXTRACT.osm.pbf",
                        help="OpenStreetMap extract covering the points")
    parser.add_argument("--buffers", default="100,300", metavar="METRES",
                        help="buffer radii in metres, comma separated (default 100,300: the 76 survey keys)")
    parser.add_argument("-o", "--out", required=True, metavar="FILE", help=".geojson or .csv")
    parser.add_argument("--crs", metavar="EPSG:XXXX", help="metric CRS to measure in (default: UTM zone of the points)")
    parser.add_argument("--chunk-size", type=positive_int, default=2000, metavar="N",
                        help="points measured at once (bounds memory; default 2000)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    parser.set_defaults(run=run)


def run(args) -> int:
    for module in ("shapely", "pyrosm", "osmnx"):
        require("osm", module, "percept environment")
    from percept.environment.measure_places import MeasureOptions, measure_places
    from percept.environment.place_files import check_output, read_geojson_places, read_location_places, write_places
    from percept.environment.variables import parse_buffer_sizes

    sizes = parse_buffer_sizes(args.buffers)
    out = check_output(args.out)
    places = read_geojson_places(args.geojson) if args.geojson else read_location_places(args.locations)
    started = time.perf_counter()
    result = measure_places(places.lon, places.lat, args.osm,
                            MeasureOptions(sizes, args.crs, args.chunk_size, args.quiet))
    write_places(out, places, result.variables)
    if result.coverage.warning():
        print(result.coverage.warning(), file=sys.stderr)
    if not args.quiet:
        measuring = time.perf_counter() - started - result.load_seconds
        print(f"{result.variables.shape[1]} environmental variables for {len(places)} points "
              f"(buffers {', '.join(map(str, sizes))} m, {result.crs_name}) in {out}; extract read in "
              f"{result.load_seconds:.1f} s, points measured in {measuring:.1f} s", file=sys.stderr)
    return 0
