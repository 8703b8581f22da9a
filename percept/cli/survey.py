"""``percept survey export``: the survey GeoJSON and demographics CSV from a Percept survey database."""

from __future__ import annotations

import argparse
import sys
from datetime import date

from percept.categories import CATEGORIES
from percept.cli.common import ArgumentParser, stderr_messages


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "survey", help="work with a Percept survey database (export)",
        description="Work with the Percept survey app's PostgreSQL + PostGIS database.")
    commands = parser.add_subparsers(dest="survey_command", metavar="SUBCOMMAND", parser_class=ArgumentParser,
                                     required=True)
    export = commands.add_parser(
        "export", help="write data.geojson and demographics.csv from the survey database",
        description="Read the survey database in one read-only transaction and write DIR/data.geojson (one "
                    "Point feature per rated image: image_id, url, average_<category> and count_<category> "
                    "over the ratings kept) and DIR/demographics.csv (the rrating view's columns, one row per "
                    "rating), the files clip_retrieval_knn and percept read with -g and -d. Existing files of "
                    "those names in DIR are replaced. Times are in the database session's time zone (PGTZ "
                    "sets it).")
    export.add_argument("--db", required=True, metavar="URL",
                        help="libpq connection string, e.g. postgresql://user@host:5432/percept; without a "
                             "password in it, PGPASSWORD or ~/.pgpass supplies one")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the two files")
    export.add_argument("--adults-only", action=argparse.BooleanOptionalAction, default=True,
                        help="keep only raters aged 18 or more, as the rrating view does (default; "
                             "--no-adults-only keeps every age)")
    export.add_argument("--enabled-only", action="store_true",
                        help="keep only ratings of images that are enabled now")
    export.add_argument("--since", type=iso_date, metavar="YYYY-MM-DD", help="keep ratings from this day on")
    export.add_argument("--until", type=iso_date, metavar="YYYY-MM-DD", help="keep ratings up to this day")
    export.add_argument("--city", metavar="NAME", help="keep ratings of images whose cityname is NAME")
    export.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    export.set_defaults(run=run_export)


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def run_export(args) -> int:
    from percept.city.survey_export import ExportFilters, export_survey

    filters = ExportFilters(adults_only=args.adults_only, enabled_only=args.enabled_only,
                            since=args.since, until=args.until, city=args.city)
    summary = export_survey(args.db, args.output, filters, log=stderr_messages(args.quiet),
                            progress=_progress_bar(args.quiet))
    if not args.quiet:
        print(summary_text(summary))
    return 0


def _progress_bar(quiet: bool):
    """A progress(done, total) callback drawing a tqdm bar of CSV rows on stderr."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="rating", disable=quiet, file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def summary_text(summary) -> str:
    """What was written, the ratings per category, and any notes."""
    lines = [f"exported {summary.ratings} ratings by {summary.raters} raters of {summary.features} images "
             f"from {summary.source} to {summary.out_dir}: data.geojson, demographics.csv",
             f"{'category':<14}{'rated images':>14}{'ratings':>10}"]
    lines += [f"{c:<14}{summary.rated_images[c]:>14}{summary.category_ratings[c]:>10}" for c in CATEGORIES]
    lines += [f"note: {note}" for note in summary.notes]
    return "\n".join(lines)
