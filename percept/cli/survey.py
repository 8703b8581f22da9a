"""``percept survey``: export the survey GeoJSON and demographics CSV from a Percept survey database, and add
suggested images to it (``add-images``)."""

from __future__ import annotations

import argparse
import sys
from datetime import date

from percept.categories import CATEGORIES
from percept.city.survey_privacy import DEFAULT_POSTCODE_CHARS, KEY_ENV, MIN_KEY_CHARS
from percept.cli.common import ArgumentParser, positive_int, stderr_messages
from percept.errors import PerceptError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "survey", help="work with a Percept survey database (export, add-images)",
        description="Work with the Percept survey app's PostgreSQL + PostGIS database.")
    commands = parser.add_subparsers(dest="survey_command", metavar="SUBCOMMAND", parser_class=ArgumentParser,
                                     required=True)
    export = commands.add_parser(
        "export", help="write data.geojson, demographics.csv and README.txt from the survey database",
        description="Read the survey database in one read-only transaction and write DIR/data.geojson (one "
                    "Point feature per rated image: image_id, url, average_<category> and count_<category> "
                    "over the ratings kept), DIR/demographics.csv (the rrating view's columns, one row per "
                    "rating, the rater as a keyed pseudonym) and DIR/README.txt (what the files hold and how "
                    "they were made); the first two are the files clip_retrieval_knn and percept read with -g "
                    "and -d. Only ratings of participants with consent = true are exported. Existing files of "
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
    export.add_argument("--include-unrated", action="store_true",
                        help="also list the images that have no kept rating yet (e.g. added by 'percept survey "
                             "add-images'), with null averages and zero counts; --enabled-only and --city apply")
    export.add_argument("--since", type=iso_date, metavar="YYYY-MM-DD", help="keep ratings from this day on")
    export.add_argument("--until", type=iso_date, metavar="YYYY-MM-DD", help="keep ratings up to this day")
    export.add_argument("--city", metavar="NAME", help="keep ratings of images whose cityname is NAME")
    export.add_argument("--pseudonym-key", metavar="KEY",
                        help=f"secret key (at least {MIN_KEY_CHARS} characters) for the raters' pseudonyms; the same "
                             f"key gives the same pseudonyms in every export (default: ${KEY_ENV}, which keeps the "
                             "key out of the shell history; without either, a random key for this export alone)")
    export.add_argument("--coarsen", action="store_true",
                        help="write ages as bands (18-24, 25-34, 35-44, 45-54, 55-64, 65+), cut postcodes to "
                             "their first characters, drop income, and add region (NL or non-NL)")
    export.add_argument("--postcode-digits", type=int, metavar="N",
                        help=f"with --coarsen, keep the first N characters of postcodes (default "
                             f"{DEFAULT_POSTCODE_CHARS}; 0 keeps none)")
    export.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    export.set_defaults(run=run_export)
    register_add_images(commands)


def register_add_images(commands) -> None:
    add = commands.add_parser(
        "add-images", help="put the images 'percept suggest' picked into the survey database, disabled",
        description="Insert the images of a 'percept suggest' CSV into the survey database as the app expects "
                    "new images: a row in image (url = --url-prefix + the image's file name, cityname = --city, "
                    "enabled = false) and a row in image_geo (the point and the camera angle), all in one "
                    "transaction. Images whose url is already there are skipped, so a second run adds none. "
                    "A dry run by default: it lists what would be added and changes nothing; --apply writes.")
    add.add_argument("suggestions", metavar="SUGGESTIONS.csv", help="the CSV written by 'percept suggest'")
    add.add_argument("--db", required=True, metavar="URL",
                     help="libpq connection string of a user that may insert into image and image_geo; without a "
                          "password in it, PGPASSWORD or ~/.pgpass supplies one")
    add.add_argument("--url-prefix", required=True, metavar="URL",
                     help="where the app will serve the images from, e.g. https://percept.example/img/ams/ (the "
                          "file name is appended)")
    add.add_argument("--city", metavar="NAME", help="the images' cityname")
    add.add_argument("--path-prefix", metavar="DIR",
                     help="the folder holding the image files on the server, for system_path (default: left empty)")
    add.add_argument("-n", type=positive_int, metavar="N", help="add only the first N suggestions (by rank)")
    add.add_argument("--apply", action="store_true", help="write (the default is a dry run that changes nothing)")
    add.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    add.set_defaults(run=run_add_images)


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def run_export(args) -> int:
    from percept.city.survey_export import ExportFilters, export_survey
    from percept.city.survey_privacy import Coarsening, Privacy, resolve_pseudonyms

    filters = ExportFilters(adults_only=args.adults_only, enabled_only=args.enabled_only,
                            since=args.since, until=args.until, city=args.city, include_unrated=args.include_unrated)
    if args.postcode_digits is not None and not args.coarsen:
        raise PerceptError("--postcode-digits applies to coarsened exports: add --coarsen")
    coarsening = None
    if args.coarsen:
        coarsening = Coarsening(DEFAULT_POSTCODE_CHARS if args.postcode_digits is None else args.postcode_digits)
    privacy = Privacy(resolve_pseudonyms(args.pseudonym_key), coarsening)
    summary = export_survey(args.db, args.output, filters, privacy, log=stderr_messages(args.quiet),
                            progress=_progress_bar(args.quiet))
    if not args.quiet:
        print(summary_text(summary))
    return 0


def run_add_images(args) -> int:
    from percept.city.suggest_io import read_suggestions
    from percept.city.survey_images import add_images, images_to_add

    table = read_suggestions(args.suggestions)
    if args.n is not None:
        table = table.head(args.n)
    images = images_to_add(table, args.url_prefix, args.path_prefix, f"suggestions file {args.suggestions}")
    result = add_images(args.db, images, args.city, args.apply)
    if not args.quiet:
        print(add_images_text(result))
    return 0


def add_images_text(result) -> str:
    """What add-images added (or would add) and skipped, one image a line."""
    count = len(result.added)
    if result.applied:
        lines = [(f"added {count} image{'s' * (count != 1)} to {result.target} (enabled = false: enable them in "
                  "the app once checked)")]
        lines += [f"  added {image_id} {image.url}" for image_id, image in result.added]
    else:
        lines = [(f"dry run: would add {count} image{'s' * (count != 1)} to {result.target}; nothing was "
                  "changed (add --apply to write)")]
        lines += [f"  would add {image.url}" for _, image in result.added]
    if result.present:
        rated = sum(p.rated for p in result.present)
        lines.append(f"skipped {len(result.present)} already in the survey ({rated} rated, "
                     f"{len(result.present) - rated} not yet rated)")
        lines += [f"  already there: {p.image_id} {p.image.url} ({'rated' if p.rated else 'not yet rated'})"
                  for p in result.present]
    return "\n".join(lines)


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
    coarse = ", coarsened" if summary.privacy.coarsening is not None else ""
    lines = [(f"exported {summary.ratings} ratings by {summary.raters} raters of {summary.features} images "
              f"from {summary.source} to {summary.out_dir}: data.geojson, demographics.csv{coarse}, README.txt"),
             f"consent: {summary.consent.note()}",
             f"{'category':<14}{'rated images':>14}{'ratings':>10}"]
    lines += [f"{c:<14}{summary.rated_images[c]:>14}{summary.category_ratings[c]:>10}" for c in CATEGORIES]
    lines += [f"note: {note}" for note in summary.notes]
    return "\n".join(lines)
