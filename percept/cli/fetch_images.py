"""``percept fetch-images``: download the images of a survey GeoJSON, resumable, with a failures CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from percept.city.retry import RetryPolicy
from percept.cli.common import positive_int, positive_number
from percept.extras import require

NOTHING_USABLE = 1


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive whole number, got {text!r}")
    return value


def add_download_options(parser: argparse.ArgumentParser) -> None:
    """Concurrency, retry and progress flags shared by the commands that download images."""
    defaults = RetryPolicy()
    parser.add_argument("--connections", type=positive_int, default=8, metavar="N",
                        help="downloads at the same time (default 8)")
    parser.add_argument("--retries", type=non_negative_int, default=defaults.tries - 1, metavar="N",
                        help=f"tries again after a timeout, 429 or 5xx answer (default {defaults.tries - 1})")
    parser.add_argument("--timeout", type=positive_number, default=defaults.timeout, metavar="SECONDS",
                        help=f"longest wait for a connection or data (default {defaults.timeout:g})")
    parser.add_argument("--backoff", type=positive_number, default=defaults.first_delay, metavar="SECONDS",
                        help=f"first pause before trying again, doubling each time, at least the server's "
                             f"Retry-After (default {defaults.first_delay:g})")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")


def retry_policy(args) -> RetryPolicy:
    return RetryPolicy(tries=args.retries + 1, first_delay=args.backoff, timeout=args.timeout)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fetch-images", help="download the images a survey GeoJSON's urls point to",
        description="Download every feature's url into a folder, named by the URL's last segment (the name "
                    "the model matches images by). Files already there are skipped, so rerunning resumes. "
                    "Each download is checked to decode as an image and written atomically; failures are "
                    "listed in a CSV (url, reason). Exit status 1 only when no image is usable.")
    parser.add_argument("-g", "--geojson", required=True, metavar="FILE", help="survey GeoJSON with a url per feature")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the images")
    parser.add_argument("--failed", metavar="FILE", help="CSV of the failures (default: DIR/failed.csv)")
    add_download_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    require("city", "httpx", "percept fetch-images")
    from percept.city.fetch import FetchOptions, fetch_images, read_image_urls

    urls = read_image_urls(args.geojson)
    options = FetchOptions(connections=args.connections, policy=retry_policy(args), quiet=args.quiet,
                           failed_csv=Path(args.failed) if args.failed else None)
    summary = fetch_images(urls, args.output, options)
    if not args.quiet:
        failed = f", {len(summary.failed)} failed (listed in {summary.failed_csv})" if summary.failed else ""
        print(f"{summary.downloaded} images downloaded, {summary.present} already there{failed}", file=sys.stderr)
    if summary.usable == 0:
        print(f"error: none of the {len(urls)} images could be downloaded; see {summary.failed_csv}", file=sys.stderr)
        return NOTHING_USABLE
    return 0
