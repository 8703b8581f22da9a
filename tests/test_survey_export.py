"""``percept survey export`` against a real PostgreSQL + PostGIS server: round trip, filters, errors.

The server starts once per test session in a temporary folder (tests/postgres_fixtures.py); the
tests skip, naming what is missing, only where PostgreSQL, PostGIS or psycopg is not installed.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from percept.categories import CATEGORIES
from percept.city.survey_db import mask_password
from percept.city.survey_export import (DEMOGRAPHICS_NAME, GEOJSON_NAME, RRATING_COLUMNS, ExportFilters,
                                        build_features, feature_collection_chunks)
from percept.cli.dropin import main as dropin_main
from percept.cli.main import main as percept_main
from percept.errors import PerceptError
from percept.data.ratings import load_ratings
from percept.synthetic.vectors import generate_synthetic_survey
from postgres_fixtures import (READER, READER_PASSWORD, TemporaryPostgres, free_port, load_sample_survey,
                               missing_reason)

# ---------------------------------------------------------------- pure parts


def test_features_average_the_kept_ratings_and_count_what_is_left_out():
    rows = [  # image_id, url, lon, lat, category_id, count, sum
        (1, "https://x/img/a.jpg", 4.9, 52.37, 1, 3, 10), (1, "https://x/img/a.jpg", 4.9, 52.37, 5, 1, 2),
        (2, None, 4.8, 52.3, 2, 2, 7),
        (3, "https://x/img/c.jpg", None, None, 3, 1, 4),
        (4, "https://x/img/d.jpg", 5.1, 52.1, 7, 2, 6), (4, "https://x/img/d.jpg", 5.1, 52.1, 4, 2, 9),
    ]
    shaped = build_features(rows)
    assert [f["properties"]["image_id"] for f in shaped.features] == [1, 4]
    first = shaped.features[0]
    assert first["geometry"] == {"type": "Point", "coordinates": [4.9, 52.37]}
    assert first["properties"]["url"] == "https://x/img/a.jpg"
    assert first["properties"]["average_walkability"] == 10 / 3
    assert first["properties"]["average_safety"] == 2.0
    assert first["properties"]["average_bikeability"] is None
    assert [first["properties"][f"count_{c}"] for c in CATEGORIES] == [3, 0, 0, 0, 1]
    assert shaped.features[1]["properties"]["average_greenness"] == 4.5
    assert shaped.ratings == 11
    assert shaped.category_ratings == {"walkability": 3, "bikeability": 2, "pleasantness": 1, "greenness": 2,
                                       "safety": 1}
    assert shaped.rated_images == {"walkability": 1, "bikeability": 1, "pleasantness": 1, "greenness": 1,
                                   "safety": 1}
    assert (shaped.without_url, shaped.without_location, shaped.other_category_ratings) == (1, 1, 2)
    assert len(shaped.notes()) == 3


def test_feature_collection_text_is_geojson():
    shaped = build_features([(1, "u/a.jpg", 4.9, 52.37, 1, 2, 7)])
    data = json.loads("".join(feature_collection_chunks(shaped.features)))
    assert data["type"] == "FeatureCollection"
    assert data["features"][0]["properties"]["average_walkability"] == 3.5
    assert json.loads("".join(feature_collection_chunks([]))) == {"type": "FeatureCollection", "features": []}


@pytest.mark.parametrize("conninfo, secret", [
    ("postgresql://ann:Tr1cky%40pw@db.example:5432/percept", "Tr1cky%40pw"),
    ("postgres://ann:plain@db.example/percept?sslmode=require", "plain"),
    ("host=db.example user=ann password=kw-secret dbname=percept", "kw-secret"),
    ("host=db.example password='quoted secret' dbname=percept", "quoted secret"),
    ("postgresql://db.example/percept?user=ann&password=qp-secret", "qp-secret"),
])
def test_passwords_are_masked(conninfo, secret):
    message = f"failed for {conninfo} with {secret} and {secret.replace('%40', '@')}"
    masked = mask_password(message, conninfo)
    assert secret not in masked and secret.replace("%40", "@") not in masked
    assert "***" in masked


def test_since_after_until_is_refused():
    from datetime import date

    with pytest.raises(PerceptError, match="--since 2024-03-01 is after --until 2024-02-01"):
        ExportFilters(since=date(2024, 3, 1), until=date(2024, 2, 1))


# ---------------------------------------------------------------- the server

@pytest.fixture(scope="session")
def postgres():
    reason = missing_reason()
    if reason:
        pytest.skip(f"survey database tests need PostgreSQL with PostGIS: {reason}")
    with TemporaryPostgres() as server:
        yield server


def export(args: list[str], capsys) -> tuple[int, str, str]:
    """``percept survey export ARGS``: exit status, stdout, stderr."""
    status = percept_main(["survey", "export", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


# ---------------------------------------------------------------- round trip

@pytest.fixture(scope="module")
def round_trip(postgres, tmp_path_factory):
    """A synthetic sample survey, put into a database and exported again."""
    survey = tmp_path_factory.mktemp("roundtrip") / "survey"
    generate_synthetic_survey(survey, n_images=300, dim=16, ratings_per_image=3.0, seed=2)
    load_sample_survey(postgres.admin_conninfo(postgres.new_database("roundtrip")), survey)
    exported = survey / "exported"
    assert percept_main(["survey", "export", "--db", postgres.url("roundtrip"), "-o", str(exported), "-q"]) == 0
    return survey, exported


def features_by_id(path: Path) -> dict[int, dict]:
    features = json.loads(path.read_text(encoding="utf-8"))["features"]
    return {f["properties"]["image_id"]: f for f in features}


def test_round_trip_gives_the_files_back(round_trip):
    survey, exported = round_trip
    assert (exported / DEMOGRAPHICS_NAME).read_bytes() == (survey / "demo.csv").read_bytes()
    source, back = features_by_id(survey / "data.geojson"), features_by_id(exported / GEOJSON_NAME)
    assert list(back) == sorted(source)
    ratings = load_ratings(exported / DEMOGRAPHICS_NAME)
    for image_id, feature in back.items():
        assert feature["geometry"] == source[image_id]["geometry"]
        props, original = feature["properties"], source[image_id]["properties"]
        assert props["url"] == original["url"]
        for category_id, category in enumerate(CATEGORIES, start=1):
            assert props[f"average_{category}"] == original[f"average_{category}"]
            mine = ratings[(ratings["image_id"] == image_id) & (ratings["category_id"] == category_id)]
            assert props[f"count_{category}"] == len(mine)


@pytest.mark.parametrize("extra", [[], ["-d", "{demo}"], ["-d", "{demo}", "--age", "30,49"],
                                   ["-d", "{demo}", "--region", "NL"]])
def test_round_trip_gives_the_same_metric_lines(round_trip, extra, capsys):
    survey, exported = round_trip
    lines = []
    for geojson, demo in ((survey / "data.geojson", survey / "demo.csv"),
                          (exported / GEOJSON_NAME, exported / DEMOGRAPHICS_NAME)):
        args = ["-g", str(geojson), "-e", str(survey / "embeddings"), "-M", "synthetic", "-k", "5,10", "-q"]
        assert dropin_main(args + [a.format(demo=demo) for a in extra]) == 0
        lines.append(capsys.readouterr().out.splitlines())
    assert len(lines[0]) == 2 * len(CATEGORIES)
    assert lines[0][0].startswith("category = walkability; k = 5; mse = ")
    assert lines[1] == lines[0]


# ---------------------------------------------------------------- filters

FILTER_DB = """
INSERT INTO image (system_path, url, cityname, enabled) VALUES
    ('/i/a.jpg', 'https://x/img/a.jpg', 'Amsterdam', true),
    ('/i/b.jpg', 'https://x/img/b.jpg', 'Amsterdam', false),
    ('/i/c.jpg', 'https://x/img/c.jpg', 'Utrecht', true),
    ('/i/d.jpg', 'https://x/img/d.jpg', 'Amsterdam', true),
    ('/i/e.jpg', NULL, 'Amsterdam', true);
INSERT INTO image_geo (image_id, angle_deg, geo) VALUES
    (1, 90, 'SRID=4326;POINT(4.9 52.37)'), (2, 0, 'SRID=4326;POINT(4.91 52.36)'),
    (3, 180, 'SRID=4326;POINT(5.12 52.09)'), (5, 0, 'SRID=4326;POINT(4.95 52.35)');
INSERT INTO survey (age, monthly_gross_income, education, gender, postalcode, country, consent) VALUES
    (30, '>3000', 'Tertiary', 'woman', '1012 AB', 'Netherlands', true),
    (16, '<1000', 'Secondary', 'man', NULL, 'Germany', true),
    (NULL, NULL, NULL, NULL, NULL, NULL, true);
INSERT INTO person (survey_id) VALUES (1), (2), (3);
INSERT INTO session (person_id) VALUES (1), (2), (3);
INSERT INTO rating (ts, session_id, image_id, category_id, rating) VALUES
    ('2024-01-10 12:00+01', 1, 1, 1, 4),
    ('2024-01-10 12:01+01', 1, 1, 1, 5),
    ('2024-02-29 23:59+01', 1, 1, 3, 2),
    ('2024-01-20 10:00+01', 2, 1, 1, 1),
    ('2024-03-01 00:00+01', 1, 2, 2, 3),
    ('2024-03-05 10:00+01', 1, 3, 5, 5),
    ('2024-03-05 11:00+01', 3, 3, 5, 1),
    ('2024-02-01 00:00+01', 1, 4, 4, 4),
    ('2024-01-31 23:59+01', 1, 5, 4, 2),
    ('2024-01-10 12:02+01', 1, 1, 2, NULL);
"""


@pytest.fixture(scope="module")
def filter_db(postgres) -> str:
    """Five images (one disabled, one in Utrecht, one without location, one without url), three raters
    (30, 16 and unknown age) and ten ratings (one without value); returns the reader's URL."""
    name = postgres.new_database("filters")
    postgres.admin_execute(FILTER_DB, name)
    return postgres.url(name)


def exported_rating_ids(folder: Path) -> list[int]:
    return load_ratings(folder / DEMOGRAPHICS_NAME)["rating_id"].tolist()


@pytest.mark.parametrize("flags, kept", [
    ([], [1, 2, 3, 5, 6, 8, 9]),
    (["--no-adults-only"], [1, 2, 3, 4, 5, 6, 7, 8, 9]),
    (["--enabled-only"], [1, 2, 3, 6, 8, 9]),
    (["--city", "Amsterdam"], [1, 2, 3, 5, 8, 9]),
    (["--since", "2024-02-01"], [3, 5, 6, 8]),
    (["--until", "2024-02-29"], [1, 2, 3, 8, 9]),
    (["--since", "2024-02-01", "--until", "2024-02-29"], [3, 8]),
    (["--no-adults-only", "--enabled-only", "--city", "Amsterdam"], [1, 2, 3, 4, 8, 9]),
])
def test_filters_keep_the_right_ratings(filter_db, tmp_path, capsys, flags, kept):
    status, out, err = export(["--db", filter_db, "-o", str(tmp_path), *flags], capsys)
    assert status == 0, err
    assert exported_rating_ids(tmp_path) == kept
    assert f"exported {len(kept)} ratings" in out


def test_default_export_is_the_rrating_view(postgres, filter_db, tmp_path, capsys):
    import psycopg

    assert export(["--db", filter_db, "-o", str(tmp_path), "-q"], capsys)[0] == 0
    with psycopg.connect(postgres.admin_conninfo("filters")) as connection:
        cursor = connection.execute("SELECT * FROM rrating WHERE rating IS NOT NULL ORDER BY rating_id")
        view_columns = [column.name for column in cursor.description]
        view_ids = [row[0] for row in cursor.fetchall()]
    header = (tmp_path / DEMOGRAPHICS_NAME).read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == view_columns == list(RRATING_COLUMNS)
    assert exported_rating_ids(tmp_path) == view_ids


def test_geojson_holds_the_averages_of_the_kept_ratings(filter_db, tmp_path, capsys):
    status, out, _ = export(["--db", filter_db, "-o", str(tmp_path)], capsys)
    assert status == 0
    features = features_by_id(tmp_path / GEOJSON_NAME)
    assert list(features) == [1, 2, 3]  # image 4 has no location, image 5 no url
    assert features[1]["geometry"]["coordinates"] == [4.9, 52.37]
    first = features[1]["properties"]
    assert (first["average_walkability"], first["count_walkability"]) == (4.5, 2)
    assert (first["average_pleasantness"], first["average_bikeability"], first["count_bikeability"]) == (2.0, None, 0)
    assert features[3]["properties"]["average_safety"] == 5.0
    assert "note: 1 rated image(s) have no url" in out and "note: 1 rated image(s) have no point" in out

    everyone = tmp_path / "everyone"
    assert export(["--db", filter_db, "-o", str(everyone), "--no-adults-only", "-q"], capsys)[0] == 0
    features = features_by_id(everyone / GEOJSON_NAME)
    assert features[1]["properties"]["average_walkability"] == 10 / 3
    assert features[3]["properties"]["average_safety"] == 3.0


def test_export_reads_one_read_only_snapshot(postgres, filter_db, tmp_path, monkeypatch, capsys):
    """A rating committed while the export runs is in neither file, and the files agree."""
    import psycopg

    from percept.city import survey_export

    def shape_then_insert(rows):
        shaped = build_features(rows)
        with psycopg.connect(postgres.admin_conninfo("filters"), autocommit=True) as other:
            other.execute("INSERT INTO rating (ts, session_id, image_id, category_id, rating) "
                          "VALUES ('2024-01-11 10:00+01', 1, 1, 1, 1) RETURNING rating_id")
        return shaped

    monkeypatch.setattr(survey_export, "build_features", shape_then_insert)
    try:
        assert export(["--db", filter_db, "-o", str(tmp_path), "-q"], capsys)[0] == 0
    finally:
        postgres.admin_execute("DELETE FROM rating WHERE rating_id > 10", "filters")
    assert exported_rating_ids(tmp_path) == [1, 2, 3, 5, 6, 8, 9]
    assert features_by_id(tmp_path / GEOJSON_NAME)[1]["properties"]["count_walkability"] == 2


def test_the_transaction_is_read_only_and_repeatable_read(postgres, filter_db):
    from percept.city.survey_db import read_only_snapshot

    with read_only_snapshot(filter_db) as cursor:
        cursor.execute("SHOW transaction_read_only")
        assert cursor.fetchone()[0] == "on"
        cursor.execute("SHOW transaction_isolation")
        assert cursor.fetchone()[0] == "repeatable read"
    with pytest.raises(PerceptError, match="cannot execute INSERT in a read-only transaction"):
        with read_only_snapshot(postgres.admin_conninfo("filters")) as cursor:
            cursor.execute("INSERT INTO language VALUES ('nl', 'Dutch')")


# ---------------------------------------------------------------- passwords

def test_password_from_pgpassword(postgres, filter_db, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PGPASSWORD", READER_PASSWORD)
    url = postgres.url("filters", password=None)
    status, out, err = export(["--db", url, "-o", str(tmp_path)], capsys)
    assert status == 0, err
    assert READER_PASSWORD not in out + err


def test_password_from_pgpass_file(postgres, filter_db, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pgpass").write_text(f"127.0.0.1:{postgres.port}:filters:{READER}:{READER_PASSWORD}\n")
    os.chmod(home / ".pgpass", stat.S_IRUSR | stat.S_IWUSR)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    status, _, err = export(["--db", postgres.url("filters", password=None), "-o", str(tmp_path / "out")], capsys)
    assert status == 0, err
    assert exported_rating_ids(tmp_path / "out") == [1, 2, 3, 5, 6, 8, 9]


def test_wrong_password_is_one_line_without_the_password(postgres, filter_db, tmp_path, capsys):
    url = postgres.url("filters", password="Wr0ng-Guess")
    status, out, err = export(["--db", url, "-o", str(tmp_path), "-q"], capsys)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: cannot connect to the survey database "
                                                   f"{READER}@127.0.0.1:{postgres.port}/filters")
    assert "password authentication failed" in err and "PGPASSWORD" in err
    assert "Wr0ng-Guess" not in err


# ---------------------------------------------------------------- other errors

def test_no_server_is_one_line(tmp_path, capsys):
    url = f"postgresql://{READER}:Hidden-Pw@127.0.0.1:{free_port()}/percept"
    status, _, err = export(["--db", url, "-o", str(tmp_path), "-q"], capsys)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: cannot connect to the survey database") and "Hidden-Pw" not in err


def test_not_a_percept_database(postgres, tmp_path, capsys):
    name = postgres.new_database("plain", empty=True)
    status, _, err = export(["--db", postgres.admin_conninfo(name), "-o", str(tmp_path), "-q"], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "is not a Percept survey database: it lacks table(s) rating, session, person, survey, image, " \
           "image_geo, category" in err


def test_a_user_without_select_is_told_to_grant_it(postgres, filter_db, tmp_path, capsys):
    postgres.admin_execute("CREATE ROLE outsider LOGIN PASSWORD 'outside-pw'")
    url = postgres.url("filters", "outsider", "outside-pw")
    status, _, err = export(["--db", url, "-o", str(tmp_path), "-q"], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "may not read the survey" in err and "grant it SELECT" in err


def test_no_ratings_after_filters_names_the_cities_and_keeps_old_files(filter_db, tmp_path, capsys):
    (tmp_path / GEOJSON_NAME).write_text("earlier export\n")
    status, _, err = export(["--db", filter_db, "-o", str(tmp_path), "--city", "Rotterdam", "-q"], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "no ratings in" in err and "city 'Rotterdam'" in err and "its cities are 'Amsterdam', 'Utrecht'" in err
    assert (tmp_path / GEOJSON_NAME).read_text() == "earlier export\n"
    assert not (tmp_path / DEMOGRAPHICS_NAME).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [GEOJSON_NAME]  # no temporary files left


def test_output_folder_that_is_a_file(filter_db, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    status, _, err = export(["--db", filter_db, "-o", str(target), "-q"], capsys)
    assert status == 2 and err == f"error: -o {target} is a file: give a folder for data.geojson and " \
                                  "demographics.csv\n"
