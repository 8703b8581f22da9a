"""``percept collect``: Mapillary street-level images of an area, with the locations file to rate them."""

from __future__ import annotations

import sys

from percept.cli.fetch_images import NOTHING_USABLE, add_download_options, positive_number, retry_policy
from percept.errors import PerceptError
from percept.extras import require

SIZES = ("1024", "2048", "original")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "collect", help="download Mapillary images of an area and their locations.csv",
        description="Find the Mapillary images inside a box from the zoom-14 coverage tiles, filter them, and "
                    "download each one's thumbnail into DIR/images/<id>.jpg, with DIR/locations.csv "
                    "(image, lon, lat, angle, sequence, captured_at, is_pano) for percept rate --locations. "
                    "Rerunning resumes; failures are listed in DIR/failed.csv.")
    parser.add_argument("--bbox", required=True, metavar="W,S,E,N", help="area in degrees: west,south,east,north")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for images/ and locations.csv")
    parser.add_argument("--mapillary-token", metavar="TOKEN", help="access token (default: $MAPILLARY_TOKEN)")
    parser.add_argument("--since", metavar="YYYY-MM-DD", help="only images captured on or after this day (UTC)")
    parser.add_argument("--no-panoramas", action="store_true", help="leave out 360° panoramas")
    parser.add_argument("--spacing", type=positive_number, metavar="METRES",
                        help="at most one image per this distance along each sequence")
    parser.add_argument("--size", choices=SIZES, default="1024", help="thumbnail width (default 1024)")
    parser.add_argument("--api-url", metavar="URL", help="Graph API base URL (default https://graph.mapillary.com)")
    parser.add_argument("--tiles-url", metavar="URL",
                        help="vector tiles base URL (default https://tiles.mapillary.com)")
    add_download_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    require("city", "httpx", "percept collect")
    require("city", "mapbox_vector_tile", "percept collect")
    from percept.city.collect import CollectOptions, collect
    from percept.city.mapillary import TOKEN_ENV, resolve_token
    from percept.city.selection import Selection, parse_since
    from percept.city.tiles import parse_bbox

    token = resolve_token(args.mapillary_token)
    if not token:
        raise PerceptError(f"collect needs a Mapillary access token: pass --mapillary-token or set {TOKEN_ENV}")
    selection = Selection(parse_bbox(args.bbox), since_ms=parse_since(args.since) if args.since else None,
                          panoramas=not args.no_panoramas, spacing_m=args.spacing)
    urls = {key: value for key, value in (("api_url", args.api_url), ("tiles_url", args.tiles_url)) if value}
    options = CollectOptions(selection, token, size=args.size, connections=args.connections,
                             policy=retry_policy(args), quiet=args.quiet, **urls)
    summary = collect(args.output, options)
    if not args.quiet:
        failed = f", {len(summary.failed)} failed (listed in {summary.failed_csv})" if summary.failed else ""
        print(f"{summary.in_coverage} images in the {summary.tiles} tiles over the box, {summary.selected} chosen: "
              f"{summary.downloaded} downloaded, {summary.present} already there{failed}; "
              f"locations in {summary.locations_csv}", file=sys.stderr)
    if summary.usable == 0:
        print("error: no image was collected: "
              + ("the box has no Mapillary coverage that passes the filters" if not summary.selected
                 else f"every download failed; see {summary.failed_csv}"), file=sys.stderr)
        return NOTHING_USABLE
    return 0
