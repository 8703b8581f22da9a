"""A throwaway PostgreSQL + PostGIS server (initdb and pg_ctl in a temporary folder) with the Percept
schema, and a loader that puts a sample survey's files into it. Used by the survey export tests and
its benchmark.

The server listens on 127.0.0.1 at a free port (password logins) and on a unix socket in its folder
(the administrator, without password). Run as root, it runs as the ``postgres`` user, as the
server refuses root. ``PERCEPT_PG_BIN`` names the folder of initdb and pg_ctl when it is not
the newest ``/usr/lib/postgresql/N/bin``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

SCHEMA = Path(__file__).resolve().parent / "data" / "percept_schema.sql"
ADMIN = "percept_admin"
SERVER_USER = "postgres"  # who runs the server when the tests run as root
TIME_ZONE = "Etc/GMT-1"  # UTC+01:00 all year: the sample survey's timestamps come back as written
TEMPLATE = "percept_template"
READER, READER_PASSWORD = "survey_reader", "s3cret-Pa55"
SERVER_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", f"timezone={TIME_ZONE}",
                   "listen_addresses=127.0.0.1")


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl of a PostgreSQL that has PostGIS, or None."""
    chosen = os.environ.get("PERCEPT_PG_BIN")
    candidates = [Path(chosen)] if chosen else sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                                                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit()
                                                      else 0, reverse=True)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "pg_config")) \
                and _has_postgis(folder):
            return folder
    return None


def _has_postgis(folder: Path) -> bool:
    out = subprocess.run([str(folder / "pg_config"), "--sharedir"], capture_output=True, text=True)
    return out.returncode == 0 and (Path(out.stdout.strip()) / "extension" / "postgis.control").is_file()


def missing_reason() -> str | None:
    """Why no temporary server can start here (None when one can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    if postgres_bin() is None:
        return ("no PostgreSQL server with PostGIS (apt-get install postgresql postgis, "
                "or set PERCEPT_PG_BIN to the folder of initdb)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root, but there is no {SERVER_USER!r} user to run the server"
        if shutil.which("runuser") is None:
            return "running as root, but runuser is missing"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TemporaryPostgres:
    """One PostgreSQL server in a temporary folder, with the template database ``percept_template``."""

    def __init__(self, bin_dir: Path | None = None):
        self.bin = bin_dir or postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="percept-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def __enter__(self) -> TemporaryPostgres:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _server_command(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        out = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr}{out.stdout}\n{tail}")

    def start(self) -> None:
        """initdb, start the server, and make the template database with the schema and a read-only role."""
        if self.as_root:
            shutil.chown(self.root, user=SERVER_USER)
        password_file = self.root / "admin-password"
        password_file.write_text("admin-only-by-socket\n")
        if self.as_root:
            shutil.chown(password_file, user=SERVER_USER)
        self._server_command("initdb", "-D", str(self.data), "-U", ADMIN, "--pwfile", str(password_file),
                             "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
                             "--no-sync")
        options = " ".join([f"-p {self.port}", f"-k {self.root}", *(f"-c {s}" for s in SERVER_SETTINGS)])
        self._server_command("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                             "-w", "-t", "60", "start")
        self.admin_execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'")
        self.admin_execute(f"CREATE DATABASE {TEMPLATE}")
        self.admin_execute(SCHEMA.read_text(encoding="utf-8"), TEMPLATE)
        self.admin_execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}", TEMPLATE)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._server_command("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.root} port={self.port} user={ADMIN} dbname={dbname}"

    def url(self, dbname: str, user: str = READER, password: str | None = READER_PASSWORD) -> str:
        """A TCP URL for a login role (the password left out when None)."""
        secret = f":{password}" if password is not None else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{dbname}"

    def admin_execute(self, statements: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.admin_conninfo(dbname), autocommit=True) as connection:
            connection.execute(statements)

    def new_database(self, name: str, empty: bool = False) -> str:
        """A fresh database named ``name``: a copy of the template, or (``empty``) without the schema."""
        template = "template0" if empty else TEMPLATE
        self.admin_execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name


def load_sample_survey(conninfo: str, survey_dir: Path, city: str = "Amsterdam") -> None:
    """Put a sample survey's data.geojson, demo.csv and locations.csv into a database with the schema.

    Every image is enabled and in ``city``; ids stay as in the files; each rating session is one
    person with one survey answer; empty demographic fields become NULL.
    """
    import psycopg

    features = json.loads((survey_dir / "data.geojson").read_text(encoding="utf-8"))["features"]
    ratings = pd.read_csv(survey_dir / "demo.csv", dtype=str, keep_default_na=False)
    angles = {}
    if (survey_dir / "locations.csv").exists():
        locations = pd.read_csv(survey_dir / "locations.csv")
        angles = dict(zip(locations["image"], locations["angle"].astype(float)))
    raters = ratings.groupby("session_id", sort=False).agg(
        first=("ts", "min"), last=("ts", "max"), age=("age", "first"), income=("monthly_gross_income", "first"),
        education=("education", "first"), gender=("gender", "first"), postalcode=("postalcode", "first"),
        country=("country", "first")).reset_index()
    with psycopg.connect(conninfo) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY image (image_id, system_path, url, cityname, enabled) FROM STDIN") as copy:
            for feature in features:
                props = feature["properties"]
                name = props["url"].rsplit("/", 1)[-1]
                copy.write_row((props["image_id"], f"/data/img/{name}", props["url"], city, True))
        with cursor.copy("COPY image_geo (image_id, angle_deg, geo) FROM STDIN") as copy:
            for feature in features:
                props, (lon, lat) = feature["properties"], feature["geometry"]["coordinates"]
                name = props["url"].rsplit("/", 1)[-1]
                copy.write_row((props["image_id"], angles.get(name), f"SRID=4326;POINT({lon!r} {lat!r})"))
        with cursor.copy("COPY survey (survey_id, age, monthly_gross_income, education, gender, postalcode, "
                         "country, consent) FROM STDIN") as copy:
            for row in raters.itertuples():
                copy.write_row((row.session_id, row.age or None, row.income or None, row.education or None,
                                row.gender or None, row.postalcode or None, row.country or None, True))
        with cursor.copy("COPY person (person_id, survey_id) FROM STDIN") as copy:
            for row in raters.itertuples():
                copy.write_row((row.session_id, row.session_id))
        with cursor.copy("COPY session (session_id, person_id, session_start, session_active) FROM STDIN") as copy:
            for row in raters.itertuples():
                copy.write_row((row.session_id, row.session_id, row.first, row.last))
        with cursor.copy("COPY rating (rating_id, ts, session_id, image_id, category_id, rating) FROM STDIN") as copy:
            for row in ratings[["rating_id", "ts", "session_id", "image_id", "category_id", "rating"]].itertuples(
                    index=False):
                copy.write_row(row)
        for table, column in (("image", "image_id"), ("survey", "survey_id"), ("person", "person_id"),
                              ("session", "session_id"), ("rating", "rating_id")):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                           f"(SELECT max({column}) FROM {table}))")
