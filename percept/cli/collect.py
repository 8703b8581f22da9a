"""``percept collect``: Mapillary street-level images of an area, with the locations file to rate them."""

from __future__ import annotations

import sys

from percept.cli.fetch_images import NOTHING_USABLE, add_download_options, positive_seconds, retry_policy
from percept.city.collect import DEFAULT_TILES_URL, SIZES
from percept.city.mapillary import DEFAULT_BASE_URL, TOKEN_ENV, resolve_token
from percept.errors import PerceptError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "collect", help="download Mapillary images of an area and their locations.csv",
        description="Find the Mapillary images inside a box from the zoom-14 coverage tiles, filter them, and "
                    "download each one's thumbnail into DIR/images/<id>.jpg, with DIR/locations.csv "
                    "(image, lon, lat, angle, sequence, captured_at, is_pano) for percept rate --locations. "
                    "Rerunning resumes; failures are listed in DIR/failed.csv.")
    parser.add_argument("--bbox", required=True, metavar="W,S,E,N", help="area in degrees: west,south,east,north")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for images/ and locations.csv")
    parser.add_argument("--mapillary-token", metavar="TOKEN", help=f"access token (default: ${TOKEN_ENV})")
    parser.add_argument("--since", metavar="YYYY-MM-DD", help="only images captured on or after this day (UTC)")
    parser.add_argument("--no-panoramas", action="store_true", help="leave out 360° panoramas")
    parser.add_argument("--spacing", type=positive_seconds, metavar="METRES",
                        help="at most one image per this distance along each sequence")
    parser.add_argument("--size", choices=SIZES, default="1024", help="thumbnail width (default 1024)")
    parser.add_argument("--api-url", default=DEFAULT_BASE_URL, metavar="URL",
                        help=f"Graph API base URL (default {DEFAULT_BASE_URL})")
    parser.add_argument("--tiles-url", default=DEFAULT_TILES_URL, metavar="URL",
                        help=f"vector tiles base URL (default {DEFAULT_TILES_URL})")
    add_download_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from percept.city.collect import CollectOptions, collect
    from percept.city.selection import Selection, parse_since
    from percept.city.tiles import parse_bbox

    token = resolve_token(args.mapillary_token)
    if not token:
        raise PerceptError(f"collect needs a Mapillary access token: pass --mapillary-token or set {TOKEN_ENV}")
    selection = Selection(parse_bbox(args.bbox), since_ms=parse_since(args.since) if args.since else None,
                          panoramas=not args.no_panoramas, spacing_m=args.spacing)
    options = CollectOptions(selection, token, size=args.size, api_url=args.api_url, tiles_url=args.tiles_url,
                             connections=args.connections, policy=retry_policy(args), quiet=args.quiet)
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
