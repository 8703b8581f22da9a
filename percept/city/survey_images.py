"""Adding images to a Percept survey database (``percept survey add-images``).

Images enter as the app expects new ones: a row in ``image`` with ``enabled = false`` (the app
shows an image only once someone enables it) and a row in ``image_geo`` with the point (EPSG:4326)
and the camera angle. All rows go in one transaction; an image whose ``url`` is already in the
database is skipped (``url`` is unique), so running it twice adds nothing the second time. A dry
run reads in a read-only snapshot and changes nothing.

Each image's ``url`` is ``url_prefix`` + its file name: the model matches survey images by the last
part of the URL, so that part must be the file name. Messages never show the password.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from percept.city.survey_db import (
    brief_error,
    check_percept_tables,
    connect,
    describe_target,
    mask_password,
    read_only_snapshot,
    require_psycopg,
)
from percept.errors import PerceptError

#: Characters a file name may not hold to be the last part of an image URL as it is.
_NOT_IN_URL = re.compile(r"[\s?#%\\/]")

EXISTING_SQL = """SELECT i.url, i.image_id, EXISTS (SELECT 1 FROM rating r WHERE r.image_id = i.image_id)
FROM image i WHERE i.url = ANY(%s)"""
INSERT_IMAGES_SQL = """INSERT INTO image (system_path, url, cityname, enabled)
SELECT t.path, t.url, %s, false FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(url, path, n)
ORDER BY t.n
ON CONFLICT (url) DO NOTHING
RETURNING image_id, url"""
INSERT_GEO_SQL = """INSERT INTO image_geo (image_id, angle_deg, geo)
SELECT t.id, t.angle, ST_SetSRID(ST_MakePoint(t.lon, t.lat), 4326)
FROM unnest(%s::int[], %s::float8[], %s::float8[], %s::float8[]) AS t(id, angle, lon, lat)"""


@dataclass(frozen=True)
class NewImage:
    """An image to add: its public URL, point, camera angle (None: unknown) and path on the server (None)."""

    url: str
    lon: float
    lat: float
    angle: float | None = None
    system_path: str | None = None


@dataclass(frozen=True)
class Present:
    """An image already in the database: its id and whether anyone has rated it."""

    image: NewImage
    image_id: int
    rated: bool


@dataclass(frozen=True)
class AddResult:
    """What ``add-images`` did (``applied``) or would do: the images added (with their new ids; None in a dry
    run) and those already there."""

    target: str
    applied: bool
    added: list[tuple[int | None, NewImage]]
    present: list[Present]


def images_to_add(table: pd.DataFrame, url_prefix: str, path_prefix: str | None = None,
                  source: str = "suggestions") -> list[NewImage]:
    """The images of a suggestions table (``image``, ``lon``, ``lat``, ``angle``), each once, in its order."""
    if not re.match(r"^https?://[^/\s]+", url_prefix or ""):
        raise PerceptError(f"--url-prefix must be the http(s) address the images will be served from, such as "
                           f"https://percept.example/img/ams/, got {url_prefix!r}")
    prefix = url_prefix if url_prefix.endswith("/") else url_prefix + "/"
    folder = None if path_prefix is None else path_prefix.rstrip("/") + "/"
    images, seen = [], set()
    for row in table.itertuples(index=False):
        name = str(row.image)
        if _NOT_IN_URL.search(name) or not name:
            raise PerceptError(f"{source}: image name {name!r} cannot be the last part of its URL as it is (no "
                               "spaces, '/', '\\', '?', '#' or '%'): rename the file")
        if not (np.isfinite(row.lon) and np.isfinite(row.lat)):
            raise PerceptError(f"{source}: image {name} has no location, and the survey needs a point for each "
                               "image: run 'percept suggest' with --locations FILE")
        url = prefix + name
        if url in seen:
            continue
        seen.add(url)
        angle = float(row.angle) if np.isfinite(row.angle) else None
        images.append(NewImage(url, float(row.lon), float(row.lat), angle,
                               None if folder is None else folder + name))
    return images


def add_images(conninfo: str, images: list[NewImage], city: str | None = None, apply: bool = False) -> AddResult:
    """Add ``images`` to the survey database (with ``apply``, in one transaction), skipping URLs already there;
    without ``apply`` only find out what would be added."""
    target = describe_target(conninfo)
    session = write_transaction(conninfo, target) if apply else read_only_snapshot(conninfo)
    with session as cursor:
        present = existing(cursor, images)
        new = [image for image in images if image.url not in present]
        added: list[tuple[int | None, NewImage]] = [*insert(cursor, new, city)] if apply \
            else [(None, image) for image in new]
    return AddResult(target, apply, added, [present[image.url] for image in images if image.url in present])


def existing(cursor, images: list[NewImage]) -> dict[str, Present]:
    """The images whose URL the database already holds, by URL."""
    by_url = {image.url: image for image in images}
    cursor.execute(EXISTING_SQL, [list(by_url)])
    return {url: Present(by_url[url], int(image_id), bool(rated)) for url, image_id, rated in cursor.fetchall()}


def insert(cursor, images: list[NewImage], city: str | None) -> list[tuple[int, NewImage]]:
    """Insert ``images`` into ``image`` (disabled) and ``image_geo``; (new id, image) of those inserted, by id."""
    if not images:
        return []
    cursor.execute(INSERT_IMAGES_SQL, [city, [i.url for i in images], [i.system_path for i in images]])
    ids = {url: int(image_id) for image_id, url in cursor.fetchall()}
    added = sorted(((ids[i.url], i) for i in images if i.url in ids), key=lambda pair: pair[0])
    cursor.execute(INSERT_GEO_SQL, [[image_id for image_id, _ in added], [i.angle for _, i in added],
                                    [i.lon for _, i in added], [i.lat for _, i in added]])
    return added


@contextlib.contextmanager
def write_transaction(conninfo: str, target: str) -> Iterator:
    """A cursor inside one read-write transaction, committed when the block ends without an error (and rolled
    back otherwise); connection failures, missing tables and refused writes raise PerceptError."""
    psycopg = require_psycopg()
    connection = connect(conninfo, "percept survey add-images")
    try:
        with connection.transaction(), connection.cursor() as cursor:
            try:
                check_percept_tables(cursor, target)
                yield cursor
            except psycopg.errors.InsufficientPrivilege as exc:
                raise PerceptError(f"the database user may not add images to {target} ({brief_error(exc)}): grant it "
                                   "SELECT on image and rating and INSERT on image and image_geo") from None
            except psycopg.errors.UniqueViolation as exc:
                raise PerceptError(f"adding the images to {target} failed, nothing was added: "
                                   f"{brief_error(exc).rstrip('.')}: another image already has that system path "
                                   "(check --path-prefix)") from None
            except psycopg.Error as exc:
                raise PerceptError(f"adding the images to {target} failed, nothing was added: "
                                   f"{mask_password(brief_error(exc), conninfo)}") from None
    finally:
        connection.close()
