"""The survey files from a Percept survey database: ``data.geojson``, ``demographics.csv``, ``README.txt``.

Three parts, kept apart: the SQL (``kept_ratings_sql`` and the queries built on it) selects
the ratings that pass the filters, with the columns of the app's ``rrating`` view (the rater's
person id in place of the session id); the pure shaping (``build_features``, and the rows of
``percept.city.survey_privacy``) turns them into GeoJSON features and CSV rows; and
``export_survey`` runs the queries in one read-only snapshot and writes the files atomically.

A kept rating has a value, a rater whose survey answer has ``consent = true`` (false and NULL
are no consent), and with the default ``adults_only`` a rater aged 18 or more, as in
``rrating``. Raters appear only as keyed pseudonyms. The model reads category ids 1-5 as its
five categories (the app seeds them in that order); ratings of any other category stay in the
CSV but have no average.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from percept.atomic import atomic_path
from percept.categories import CATEGORIES, CATEGORY_BY_ID
from percept.city.survey_privacy import KEY_ENV, Privacy
from percept.city.survey_readme import README_NAME, ReadmeFacts, readme_text
from percept.errors import PerceptError

GEOJSON_NAME = "data.geojson"
DEMOGRAPHICS_NAME = "demographics.csv"
ADULT_AGE = 18
PROGRESS_EVERY = 5000  # CSV rows between progress updates
FETCH_ROWS = 5000  # rows per round trip of the server-side cursor

#: Where each of ``SOURCE_COLUMNS`` comes from: the ``rrating`` view's columns with the person in
#: place of the session, and the time as the database writes it (ISO, with its UTC offset).
_COLUMN_SOURCES = ("r.rating_id", "r.ts::text", "p.person_id", "r.image_id", "r.category_id", "r.rating",
                   "sv.postalcode", "sv.country", "sv.age", "sv.monthly_gross_income", "sv.education", "sv.gender")
CONSENTED = "sv.consent IS TRUE"
_JOINS = """FROM rating r
JOIN session se ON se.session_id = r.session_id
JOIN person p ON p.person_id = se.person_id
JOIN survey sv ON sv.survey_id = p.survey_id
JOIN image i ON i.image_id = r.image_id"""


@dataclass(frozen=True)
class ExportFilters:
    """Which ratings to export; dates are whole days in the database session's time zone, both inclusive."""

    adults_only: bool = True
    enabled_only: bool = False
    since: date | None = None
    until: date | None = None
    city: str | None = None
    include_unrated: bool = False  # also list images with no kept rating (averages null, counts 0)

    def __post_init__(self):
        if self.since and self.until and self.since > self.until:
            raise PerceptError(f"--since {self.since} is after --until {self.until}: no day is left between them")

    def describe(self) -> str:
        """The active filters in words, for messages."""
        parts = ["raters aged 18 or more" if self.adults_only else "raters of every age"]
        if self.enabled_only:
            parts.append("enabled images only")
        if self.since:
            parts.append(f"since {self.since.isoformat()}")
        if self.until:
            parts.append(f"until {self.until.isoformat()}")
        if self.city is not None:
            parts.append(f"city {self.city!r}")
        if self.include_unrated:
            parts.append("unrated images listed too")
        return ", ".join(parts)


def kept_ratings_sql(filters: ExportFilters):
    """SELECT of the kept (filtered, consenting) ratings with ``SOURCE_COLUMNS`` (psycopg ``sql.Composed``)."""
    from psycopg import sql

    columns = sql.SQL(", ").join(sql.SQL(source) for source in _COLUMN_SOURCES)
    return sql.SQL("SELECT {} {} WHERE {} AND {}").format(columns, sql.SQL(_JOINS), _filter_conditions(filters),
                                                         sql.SQL(CONSENTED))


def _filter_conditions(filters: ExportFilters):
    """The WHERE conditions of the filters (consent apart)."""
    from psycopg import sql

    conditions: list[sql.Composable] = [sql.SQL("r.rating IS NOT NULL")]
    if filters.adults_only:
        conditions.append(sql.SQL("sv.age >= {}").format(sql.Literal(ADULT_AGE)))
    if filters.since:
        conditions.append(sql.SQL("r.ts >= {}").format(sql.Literal(filters.since)))
    if filters.until:
        conditions.append(sql.SQL("r.ts < {} + 1").format(sql.Literal(filters.until)))
    conditions.append(_image_conditions(filters))
    return sql.SQL(" AND ").join(conditions)


def demographics_sql(filters: ExportFilters):
    """The kept ratings by rating id."""
    from psycopg import sql

    return sql.SQL("{} ORDER BY r.rating_id").format(kept_ratings_sql(filters))


def image_totals_sql(filters: ExportFilters):
    """Per rated image and category: image id, url, lon, lat, category id, ratings and their sum."""
    from psycopg import sql

    unrated: sql.Composable = sql.SQL("")
    if filters.include_unrated:  # images the city and enabled filters keep, with no kept rating: a null category
        unrated = sql.SQL(""" UNION ALL SELECT i.image_id, NULL, 0, 0 FROM image i
WHERE NOT EXISTS (SELECT 1 FROM kept k WHERE k.image_id = i.image_id) AND {}""").format(_image_conditions(filters))
    return sql.SQL("""WITH kept AS ({}),
totals AS (SELECT image_id, category_id, count(*) AS n, sum(rating) AS total FROM kept GROUP BY image_id, category_id
{})
SELECT t.image_id, i.url, ST_X(g.geo), ST_Y(g.geo), t.category_id, t.n, t.total
FROM totals t JOIN image i ON i.image_id = t.image_id LEFT JOIN image_geo g ON g.image_id = t.image_id
ORDER BY t.image_id, t.category_id""").format(kept_ratings_sql(filters), unrated)


def _image_conditions(filters: ExportFilters):
    """The filters' conditions on images alone (enabled, city): TRUE when there are none."""
    from psycopg import sql

    conditions: list[sql.Composable] = [sql.SQL("TRUE")]
    if filters.enabled_only:
        conditions.append(sql.SQL("i.enabled"))
    if filters.city is not None:
        conditions.append(sql.SQL("i.cityname = {}").format(sql.Literal(filters.city)))
    return sql.SQL(" AND ").join(conditions)


def consent_counts_sql(filters: ExportFilters):
    """Among the ratings that pass the filters: ratings and participants (persons) with consent, and
    ratings and participants without."""
    from psycopg import sql

    return sql.SQL("""SELECT count(*) FILTER (WHERE {consent}), count(DISTINCT p.person_id) FILTER (WHERE {consent}),
count(*) FILTER (WHERE NOT ({consent})), count(DISTINCT p.person_id) FILTER (WHERE NOT ({consent}))
{joins} WHERE {conditions}""").format(consent=sql.SQL(CONSENTED), joins=sql.SQL(_JOINS),
                                      conditions=_filter_conditions(filters))


@dataclass(frozen=True)
class ConsentCounts:
    """Ratings and participants kept (consent = true) and left out (consent false or NULL)."""

    ratings: int
    participants: int
    left_out_ratings: int
    left_out_participants: int

    def note(self) -> str:
        return (f"left out {self.left_out_ratings} ratings by {self.left_out_participants} participants without "
                "consent (consent false or not given)")


CITY_NAMES_SQL = "SELECT DISTINCT cityname FROM image WHERE cityname IS NOT NULL ORDER BY 1 LIMIT 20"


@dataclass
class SurveyFeatures:
    """The GeoJSON features of the rated images, and what the shaping counted on the way."""

    features: list[dict] = field(default_factory=list)
    ratings: int = 0
    category_ratings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    rated_images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    without_url: int = 0  # rated images left out: no url to name their file
    without_location: int = 0  # rated images left out: no point in image_geo
    other_category_ratings: int = 0  # kept ratings of category ids outside 1-5

    def notes(self) -> list[str]:
        """One line per thing the user should know about the GeoJSON."""
        notes = []
        if self.without_url:
            notes.append(f"{self.without_url} rated image(s) have no url and are left out of {GEOJSON_NAME}")
        if self.without_location:
            notes.append(f"{self.without_location} rated image(s) have no point in image_geo and are left out "
                         f"of {GEOJSON_NAME}")
        if self.other_category_ratings:
            notes.append(f"{self.other_category_ratings} rating(s) of category ids other than 1-5 are in "
                         f"{DEMOGRAPHICS_NAME} but in no average")
        return notes


def build_features(rows: Iterable[tuple]) -> SurveyFeatures:
    """Features from ``image_totals_sql`` rows (grouped by image): properties ``image_id``, ``url``,
    ``average_<category>`` (mean of the kept ratings, None without any) and ``count_<category>``."""
    shaped = SurveyFeatures()
    image = None
    for image_id, url, lon, lat, category_id, count, total in rows:
        if image is None or image["id"] != image_id:
            _add_image(shaped, image)
            image = {"id": image_id, "url": url, "point": (lon, lat), "counts": {}, "totals": {}}
        shaped.ratings += count
        if category_id is None:  # an unrated image (include_unrated): listed with null averages
            continue
        category = CATEGORY_BY_ID.get(category_id)
        if category is None:
            shaped.other_category_ratings += count
            continue
        image["counts"][category] = count
        image["totals"][category] = total
    _add_image(shaped, image)
    return shaped


def _add_image(shaped: SurveyFeatures, image: dict | None) -> None:
    if image is None:
        return
    for category, count in image["counts"].items():
        shaped.category_ratings[category] += count
        shaped.rated_images[category] += 1
    if not image["url"]:
        shaped.without_url += 1
        return
    if image["point"][0] is None or image["point"][1] is None:
        shaped.without_location += 1
        return
    counts, totals = image["counts"], image["totals"]
    properties = {"image_id": image["id"], "url": image["url"]}
    properties.update({f"average_{c}": totals[c] / counts[c] if c in counts else None for c in CATEGORIES})
    properties.update({f"count_{c}": counts.get(c, 0) for c in CATEGORIES})
    shaped.features.append({"type": "Feature", "properties": properties,
                            "geometry": {"type": "Point", "coordinates": list(image["point"])}})


def feature_collection_chunks(features: list[dict]) -> Iterator[str]:
    """The GeoJSON FeatureCollection text, one feature per chunk."""
    yield '{"type": "FeatureCollection", "features": ['
    for number, feature in enumerate(features):
        yield (",\n" if number else "\n") + json.dumps(feature, allow_nan=False)
    yield "\n]}\n"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote, for the command's summary."""

    out_dir: Path
    source: str
    filters: ExportFilters
    privacy: Privacy
    consent: ConsentCounts
    features: int
    category_ratings: dict[str, int]
    rated_images: dict[str, int]
    notes: list[str]

    @property
    def ratings(self) -> int:
        return self.consent.ratings

    @property
    def raters(self) -> int:
        return self.consent.participants


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Make ``out_dir`` (and its parents) if needed; PerceptError if it cannot hold the files."""
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise PerceptError(f"-o {root} is a file: give a folder for {GEOJSON_NAME}, {DEMOGRAPHICS_NAME} and "
                           f"{README_NAME}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PerceptError(f"cannot create the output folder {root} ({exc.strerror or exc}): "
                           "give a folder you may write to with -o") from None
    return root


def export_survey(conninfo: str, out_dir: str | Path, filters: ExportFilters = ExportFilters(),
                  privacy: Privacy | None = None, log: Callable[[str], None] = lambda message: None,
                  progress: Callable[[int, int], None] = lambda done, total: None) -> ExportSummary:
    """Write ``data.geojson``, ``demographics.csv`` and ``README.txt`` into ``out_dir`` from one read-only
    snapshot, with raters' ``privacy`` (default: pseudonyms with a random key, no coarsening).

    ``progress(done, total)`` follows the CSV rows; existing files of those names are replaced,
    and none of them changes when the export fails.
    """
    from percept.city.survey_db import describe_target, read_only_snapshot

    privacy = privacy or Privacy()
    source = describe_target(conninfo)  # first: it says which extra to install when psycopg is missing
    root = prepare_output_dir(out_dir)
    log(f"reading the survey from {source} ({filters.describe()})")
    if privacy.pseudonyms.from_random_key:
        log(f"no pseudonym key (--pseudonym-key or {KEY_ENV}): raters get pseudonyms from a random key that "
            "this export alone uses, so they match no other export")
    with read_only_snapshot(conninfo) as cursor:
        cursor.execute("SET LOCAL datestyle TO 'ISO'")
        cursor.execute(consent_counts_sql(filters))
        consent = ConsentCounts(*cursor.fetchone())
        if not consent.ratings:
            raise PerceptError(_no_ratings_message(cursor, source, filters, consent))
        cursor.execute(image_totals_sql(filters))
        shaped = build_features(cursor.fetchall())
        summary = ExportSummary(root, source, filters, privacy, consent, len(shaped.features),
                                shaped.category_ratings, shaped.rated_images, shaped.notes())
        _write_files(cursor, root, summary, shaped, progress)
    return summary


def _write_files(cursor, root: Path, summary: ExportSummary, shaped: SurveyFeatures,
                 progress: Callable[[int, int], None]) -> None:
    """The three files, renamed into place together once all are complete; the CSV readable by its owner only."""
    readme = readme_text(ReadmeFacts(
        written_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), source=summary.source,
        filters=summary.filters.describe(), privacy=summary.privacy, ratings=summary.ratings,
        participants=summary.raters, features=summary.features, left_out_ratings=summary.consent.left_out_ratings,
        left_out_participants=summary.consent.left_out_participants))
    try:
        with atomic_path(root / DEMOGRAPHICS_NAME) as csv_tmp, atomic_path(root / GEOJSON_NAME) as geo_tmp, \
                atomic_path(root / README_NAME) as readme_tmp:
            csv_tmp.chmod(0o600)
            with open(csv_tmp, "w", encoding="utf-8", newline="") as handle:
                _write_ratings(cursor, handle, summary, progress)
            with open(geo_tmp, "w", encoding="utf-8", newline="") as handle:
                handle.writelines(feature_collection_chunks(shaped.features))
            readme_tmp.write_text(readme, encoding="utf-8")
    except OSError as exc:
        raise PerceptError(f"cannot write into {root} ({exc.strerror or exc}): "
                           "check the -o folder's space and permissions") from None


def _write_ratings(cursor, handle, summary: ExportSummary, progress: Callable[[int, int], None]) -> None:
    """The kept ratings as CSV rows, streamed from a server-side cursor and shaped by the privacy settings."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(summary.privacy.columns)
    shape = summary.privacy.row_shaper()
    done = 0
    with cursor.connection.cursor(name="percept_export_ratings") as rows:
        rows.itersize = FETCH_ROWS
        rows.execute(demographics_sql(summary.filters))
        for row in rows:
            writer.writerow(shape(row))
            done += 1
            if done % PROGRESS_EVERY == 0:
                progress(done, summary.ratings)
    progress(done, summary.ratings)


def _no_ratings_message(cursor, source: str, filters: ExportFilters, consent: ConsentCounts) -> str:
    message = f"no ratings in {source} pass the filters ({filters.describe()})"
    if consent.left_out_ratings:
        message += f" with consent; {consent.note()}"
    if filters.city is not None:
        cursor.execute(CITY_NAMES_SQL)
        cities = [row[0] for row in cursor.fetchall()]
        message += f"; its cities are {', '.join(map(repr, cities))}" if cities else "; no image has a city name"
    return message + ": loosen the filters or check --db"
