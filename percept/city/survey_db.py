"""Connecting to a Percept survey database: one read-only snapshot, and messages that never show the password.

The connection string is anything libpq takes (``postgresql://user:pass@host:port/db`` or
``host=... dbname=...``). Without a password in it, libpq reads ``PGPASSWORD`` or ``~/.pgpass``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from percept.errors import PerceptError
from percept.extras import require

#: The tables the export reads; a database without them is not a Percept survey database.
REQUIRED_TABLES = ("rating", "session", "person", "survey", "image", "image_geo", "category")
CONNECT_TIMEOUT_S = 10
MASK = "***"

_URL_PASSWORD = re.compile(r"^[a-z]+://[^/@:]*:([^@/]*)@", re.IGNORECASE)
_PASSWORD_KEYWORD = re.compile(r"(?:^|[\s?&])password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def secrets_in(conninfo: str) -> list[str]:
    """The password texts written in a connection string (URL user info, ``password=`` keyword or parameter)."""
    found = [m.group(1) for m in _URL_PASSWORD.finditer(conninfo)]
    found += [m.group(1).strip("'") for m in _PASSWORD_KEYWORD.finditer(conninfo)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def mask_password(text: str, conninfo: str) -> str:
    """``text`` with every password written in ``conninfo`` (raw or %-decoded) replaced by ``***``."""
    from urllib.parse import unquote

    for secret in secrets_in(conninfo):
        for form in {secret, unquote(secret)}:
            text = text.replace(form, MASK)
    return text


def require_psycopg():
    """The psycopg module, or a PerceptError saying how to install it."""
    return require("db", "psycopg", "the survey database export")


def describe_target(conninfo: str) -> str:
    """``user@host:port/dbname`` for messages (libpq defaults left out); never the password."""
    require_psycopg()
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conninfo)
    except Exception:  # noqa: BLE001 - an unparsable string is reported when connecting
        return "the --db database"
    where = str(params.get("host") or "local socket")
    if params.get("port"):
        where += f":{params['port']}"
    user = f"{params['user']}@" if params.get("user") else ""
    return f"{user}{where}/{params.get('dbname') or '(default database)'}"


def brief_error(exc: BaseException) -> str:
    """The first two non-blank lines of an error, on one line (libpq puts the reason on the second)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:2]) or type(exc).__name__


def connect(conninfo: str, application: str):
    """A psycopg connection named ``application`` (with a connect timeout unless the URL sets one); a failure
    raises PerceptError with the password masked."""
    psycopg = require_psycopg()
    from psycopg.conninfo import conninfo_to_dict

    try:
        extra = {} if "connect_timeout" in conninfo_to_dict(conninfo) else {"connect_timeout": CONNECT_TIMEOUT_S}
        return psycopg.connect(conninfo, application_name=application, **extra)
    except psycopg.Error as exc:
        raise PerceptError(f"cannot connect to the survey database {describe_target(conninfo)}: "
                           f"{mask_password(brief_error(exc), conninfo)}: check --db, that the server runs, and the "
                           "password (in the URL, PGPASSWORD or ~/.pgpass)") from None


@contextlib.contextmanager
def read_only_snapshot(conninfo: str) -> Iterator:
    """A cursor inside one REPEATABLE READ, READ ONLY transaction; the connection closes afterwards.

    Connection failures and a database lacking the Percept tables raise PerceptError.
    """
    psycopg = require_psycopg()
    target = describe_target(conninfo)
    connection = connect(conninfo, "percept survey export")
    try:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        with connection.transaction(), connection.cursor() as cursor:
            try:
                check_percept_tables(cursor, target)
                yield cursor
            except psycopg.errors.InsufficientPrivilege as exc:
                raise PerceptError(f"the database user may not read the survey in {target} ({brief_error(exc)}): "
                                   "grant it SELECT on the survey tables") from None
            except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction) as exc:
                raise PerceptError(f"{target} does not look like a Percept survey database "
                                   f"({brief_error(exc)}): check that --db names the survey database") from None
            except psycopg.Error as exc:
                raise PerceptError(f"reading the survey database {target} failed: "
                                   f"{mask_password(brief_error(exc), conninfo)}") from None
    finally:
        connection.close()


def check_percept_tables(cursor, target: str) -> None:
    """Raise PerceptError naming the tables (and the consent column, and PostGIS) that the database lacks."""
    cursor.execute("SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NULL",
                   [list(REQUIRED_TABLES)])
    missing = [row[0] for row in cursor.fetchall()]
    if missing:
        raise PerceptError(f"{target} is not a Percept survey database: it lacks table(s) {', '.join(missing)}; "
                           "check that --db names the survey database")
    cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'survey'::regclass "
                   "AND attname = 'consent' AND NOT attisdropped)")
    if not cursor.fetchone()[0]:
        raise PerceptError(f"{target}'s survey table has no consent column: only ratings of participants who "
                           "consented are exported, so check that --db names the survey database")
    cursor.execute("SELECT to_regprocedure('st_x(geometry)') IS NOT NULL")
    if not cursor.fetchone()[0]:
        raise PerceptError(f"{target} lacks PostGIS (function st_x): check that --db names the survey database")
