"""``percept survey export`` against a real PostgreSQL + PostGIS server: round trip, filters, errors.

The server starts once per test session in a temporary folder (tests/postgres_fixtures.py); the
tests skip, naming what is missing, only where PostgreSQL, PostGIS or psycopg is not installed.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
from postgres_fixtures import READER, READER_PASSWORD, TemporaryPostgres, free_port, load_sample_survey, missing_reason

from percept.categories import CATEGORIES
from percept.city.survey_db import mask_password
from percept.city.survey_export import (
    DEMOGRAPHICS_NAME,
    GEOJSON_NAME,
    ExportFilters,
    build_features,
    feature_collection_chunks,
)
from percept.city.survey_privacy import FULL_COLUMNS
from percept.cli.dropin import main as dropin_main
from percept.cli.main import main as percept_main
from percept.data.ratings import load_ratings
from percept.errors import PerceptError
from percept.synthetic.vectors import generate_synthetic_survey

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
    original = pd.read_csv(survey / "demo.csv", dtype=str, keep_default_na=False)
    back = pd.read_csv(exported / DEMOGRAPHICS_NAME, dtype=str, keep_default_na=False)
    assert list(back.columns) == [c if c != "session_id" else "rater" for c in original.columns]
    pd.testing.assert_frame_equal(back.drop(columns="rater"), original.drop(columns="session_id"))
    pairs = set(zip(original["session_id"], back["rater"]))  # one pseudonym per rater, and no two raters share one
    assert len(pairs) == original["session_id"].nunique() == back["rater"].nunique()
    assert back["rater"].str.fullmatch("[0-9a-f]{16}").all()
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


@pytest.fixture(scope="module")
def coarse_round_trip(round_trip, postgres):
    """The round trip's database exported again with --coarsen."""
    survey, exported = round_trip
    coarse = survey / "coarse"
    assert percept_main(["survey", "export", "--db", postgres.url("roundtrip"), "-o", str(coarse), "--coarsen",
                         "-q"]) == 0
    return survey, exported, coarse


@pytest.mark.parametrize("coarse_filter, full_filter", [
    (["--age", "30,49"], ["--age", "35,44"]),  # 25-34 and 45-54 straddle 30..49: only 35-44 is within
    (["--age", "25,44"], ["--age", "25,44"]),
    (["--age", "45"], ["--age", "45,120"]),
    (["--region", "NL"], ["--region", "NL"]),  # decided on the full postcode before it was cut
    (["--region", "non-NL", "--gender", "woman"], ["--region", "non-NL", "--gender", "woman"]),
])
def test_the_dropin_filters_work_on_a_coarsened_export(coarse_round_trip, coarse_filter, full_filter, capsys):
    survey, exported, coarse = coarse_round_trip
    lines = []
    for demo, rules in ((coarse / DEMOGRAPHICS_NAME, coarse_filter), (exported / DEMOGRAPHICS_NAME, full_filter)):
        args = ["-g", str(coarse / GEOJSON_NAME), "-e", str(survey / "embeddings"), "-M", "synthetic", "-k", "5,10",
                "-q", "-d", str(demo), *rules]
        assert dropin_main(args) == 0
        lines.append(capsys.readouterr().out.splitlines())
    assert len(lines[0]) == 2 * len(CATEGORIES) and lines[0][0].startswith("category = walkability; k = 5; mse = ")
    assert lines[0] == lines[1]


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
    assert header.split(",") == [c if c != "session_id" else "rater" for c in view_columns] == list(FULL_COLUMNS)
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
    assert status == 2 and err == f"error: -o {target} is a file: give a folder for data.geojson, " \
                                  "demographics.csv and README.txt\n"


# ---------------------------------------------------------------- consent, pseudonyms, coarsening

PRIVACY_DB = """
INSERT INTO image (system_path, url, cityname, enabled) VALUES
    ('/i/a.jpg', 'https://x/img/a.jpg', 'Amsterdam', true),
    ('/i/b.jpg', 'https://x/img/b.jpg', 'Amsterdam', true),
    ('/i/c.jpg', 'https://x/img/c.jpg', 'Amsterdam', true);
INSERT INTO image_geo (image_id, angle_deg, geo) VALUES
    (1, 90, 'SRID=4326;POINT(4.9 52.37)'), (2, 0, 'SRID=4326;POINT(4.91 52.36)'),
    (3, 180, 'SRID=4326;POINT(4.92 52.35)');
INSERT INTO survey (age, monthly_gross_income, education, gender, postalcode, country, consent) VALUES
    (31, '>3000', 'Tertiary', 'woman', '1012 AB', 'Netherlands', true),
    (47, '<1000', 'Secondary', 'man', '3511 CD', NULL, true),
    (52, '1000-2000', 'Postgraduate', 'non-binary', '75001', 'France', false),
    (67, '2000-3000', 'Primary', 'woman', '1011 XY', 'Netherlands', NULL),
    (23, '1000-2000', 'Tertiary', 'man', '90210', 'USA', true);
INSERT INTO person (survey_id) VALUES (1), (2), (3), (4), (5);
INSERT INTO session (person_id) VALUES (1), (2), (3), (4), (5), (1);
INSERT INTO rating (ts, session_id, image_id, category_id, rating) VALUES
    ('2024-01-10 12:00+01', 1, 1, 1, 4),
    ('2024-01-10 12:01+01', 3, 1, 1, 1),
    ('2024-01-10 12:02+01', 4, 1, 1, 1),
    ('2024-01-11 09:00+01', 2, 1, 1, 5),
    ('2024-01-11 09:01+01', 2, 2, 3, 2),
    ('2024-01-12 10:00+01', 3, 2, 3, 5),
    ('2024-01-12 10:01+01', 4, 3, 5, 5),
    ('2024-01-13 08:00+01', 5, 3, 5, 3),
    ('2024-01-14 18:00+01', 6, 3, 2, 4),
    ('2024-01-14 18:01+01', 6, 2, 3, 3);
"""
#: person of each session, and who consented (person 3: false, person 4: NULL)
PRIVACY_PERSONS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 1}
CONSENTING = {1, 2, 5}
PRIVACY_AGES = {1: 31, 2: 47, 3: 52, 4: 67, 5: 23}
FULL_POSTCODES = ("1012 AB", "1012AB", "3511 CD", "3511CD", "75001", "1011 XY", "90210")
KEY = "a-secret-key-of-some-length"


@pytest.fixture(scope="module")
def privacy_db(postgres) -> str:
    """Three images, five participants (one with two sessions; one without consent, one with consent NULL)
    and ten ratings; returns the reader's URL."""
    name = postgres.new_database("privacy")
    postgres.admin_execute(PRIVACY_DB, name)
    return postgres.url(name)


def privacy_ratings(postgres) -> pd.DataFrame:
    """Every rating of the privacy database with its person, straight from the tables."""
    import psycopg

    with psycopg.connect(postgres.admin_conninfo("privacy")) as connection:
        rows = connection.execute("SELECT rating_id, session_id, image_id, category_id, rating FROM rating "
                                  "ORDER BY rating_id").fetchall()
    table = pd.DataFrame(rows, columns=["rating_id", "session_id", "image_id", "category_id", "rating"])
    return table.assign(person=table["session_id"].map(PRIVACY_PERSONS))


def all_text(folder: Path) -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(folder.iterdir()))


def test_only_ratings_of_consenting_participants_are_exported(postgres, privacy_db, tmp_path, capsys):
    status, out, err = export(["--db", privacy_db, "-o", str(tmp_path), "--pseudonym-key", KEY], capsys)
    assert status == 0, err
    table = privacy_ratings(postgres)
    kept = table[table["person"].isin(CONSENTING)]
    refused = table[~table["person"].isin(CONSENTING)]
    assert exported_rating_ids(tmp_path) == kept["rating_id"].tolist() == [1, 4, 5, 8, 9, 10]
    assert f"exported {len(kept)} ratings by {len(CONSENTING)} raters" in out
    assert f"left out {len(refused)} ratings by 2 participants without consent" in out
    features = features_by_id(tmp_path / GEOJSON_NAME)
    for image_id, feature in features.items():
        for category_id, category in enumerate(CATEGORIES, start=1):
            mine = kept[(kept["image_id"] == image_id) & (kept["category_id"] == category_id)]["rating"]
            assert feature["properties"][f"count_{category}"] == len(mine)
            assert feature["properties"][f"average_{category}"] == (mine.mean() if len(mine) else None)
    assert features[1]["properties"]["average_walkability"] == 4.5  # not (4 + 1 + 1 + 5) / 4
    ratings = pd.read_csv(tmp_path / DEMOGRAPHICS_NAME, dtype=str)
    assert not ratings["age"].isin(["52", "67"]).any()
    text = all_text(tmp_path)
    assert "75001" not in text and "France" not in text and "1011 XY" not in text


def test_no_consenting_rating_is_one_line(postgres, privacy_db, tmp_path, capsys):
    status, _, err = export(["--db", privacy_db, "-o", str(tmp_path), "--since", "2024-01-12",
                             "--until", "2024-01-12", "-q"], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "no ratings in" in err and "left out 2 ratings by 2 participants without consent" in err


def test_a_survey_table_without_consent_is_refused(postgres, tmp_path, capsys):
    name = postgres.new_database("noconsent")
    postgres.admin_execute(PRIVACY_DB + "ALTER TABLE survey DROP COLUMN consent;", name)
    status, _, err = export(["--db", postgres.url(name), "-o", str(tmp_path), "-q"], capsys)
    assert status == 2 and err.count("\n") == 1 and "survey table has no consent column" in err
    assert not (tmp_path / DEMOGRAPHICS_NAME).exists()


def test_raters_are_keyed_pseudonyms(postgres, privacy_db, tmp_path, monkeypatch, capsys):
    import hashlib
    import hmac

    monkeypatch.delenv("PERCEPT_PSEUDONYM_KEY", raising=False)
    runs = {}
    for label, args in (("flag", ["--pseudonym-key", KEY]), ("again", ["--pseudonym-key", KEY]),
                        ("random", []), ("random again", [])):
        status, out, err = export(["--db", privacy_db, "-o", str(tmp_path / label), *args], capsys)
        assert status == 0, err
        assert KEY not in out + err + all_text(tmp_path / label)
        runs[label] = pd.read_csv(tmp_path / label / DEMOGRAPHICS_NAME, dtype=str)
        assert ("random key" in err) == label.startswith("random")
    monkeypatch.setenv("PERCEPT_PSEUDONYM_KEY", KEY)
    assert export(["--db", privacy_db, "-o", str(tmp_path / "env"), "-q"], capsys)[0] == 0
    runs["env"] = pd.read_csv(tmp_path / "env" / DEMOGRAPHICS_NAME, dtype=str)

    table = privacy_ratings(postgres).set_index("rating_id")
    persons = table.loc[runs["flag"]["rating_id"].astype(int), "person"].tolist()
    expected = [hmac.new(KEY.encode(), f"person:{p}".encode(), hashlib.sha256).hexdigest()[:16] for p in persons]
    assert runs["flag"]["rater"].tolist() == runs["again"]["rater"].tolist() == runs["env"]["rater"].tolist() \
        == expected
    assert runs["random"]["rater"].nunique() == runs["random again"]["rater"].nunique() == len(CONSENTING)
    assert not set(runs["random"]["rater"]) & set(runs["random again"]["rater"])
    assert not set(runs["random"]["rater"]) & set(expected)
    assert "session_id" not in runs["flag"].columns
    person_one = runs["flag"][runs["flag"]["rating_id"].isin(["1", "9", "10"])]["rater"]
    assert person_one.nunique() == 1  # two sessions of one participant share a pseudonym


def test_a_short_pseudonym_key_is_refused(privacy_db, tmp_path, capsys):
    status, _, err = export(["--db", privacy_db, "-o", str(tmp_path), "--pseudonym-key", "tiny-k3y"], capsys)
    assert status == 2 and err.count("\n") == 1 and "fewer than 16" in err and "tiny-k3y" not in err
    assert not (tmp_path / DEMOGRAPHICS_NAME).exists()


def test_coarsened_export_holds_no_exact_age_postcode_or_income(privacy_db, tmp_path, capsys):
    status, out, err = export(["--db", privacy_db, "-o", str(tmp_path), "--coarsen", "--pseudonym-key", KEY],
                              capsys)
    assert status == 0, err
    ratings = pd.read_csv(tmp_path / DEMOGRAPHICS_NAME, dtype=str, keep_default_na=False)
    assert list(ratings.columns) == ["rating_id", "ts", "rater", "image_id", "category_id", "rating", "postalcode",
                                     "country", "age", "education", "gender", "region"]
    by_id = ratings.set_index("rating_id")
    assert by_id.loc["1", "age"] == "25-34" and by_id.loc["4", "age"] == "45-54" and by_id.loc["8", "age"] == "18-24"
    assert by_id.loc["1", "postalcode"] == "10" and by_id.loc["4", "postalcode"] == "35"
    assert by_id.loc["4", "region"] == "NL" and by_id.loc["8", "region"] == "non-NL"  # by full postcode, then cut
    demographic = ratings.drop(columns=["rating_id", "ts", "image_id", "category_id", "rating"])
    ages = {str(age) for age in PRIVACY_AGES.values()}
    assert not demographic.isin(ages).any().any()
    text = all_text(tmp_path)
    for secret in (*FULL_POSTCODES, ">3000", "<1000", "1000-2000", "2000-3000", "monthly_gross_income"):
        assert secret not in text
    assert ", coarsened" in out

    three = tmp_path / "three"
    assert export(["--db", privacy_db, "-o", str(three), "--coarsen", "--postcode-digits", "3", "-q"], capsys)[0] == 0
    assert pd.read_csv(three / DEMOGRAPHICS_NAME, dtype=str)["postalcode"].tolist() == ["101", "351", "351", "902",
                                                                                        "101", "101"]


def test_postcode_digits_needs_coarsen(privacy_db, tmp_path, capsys):
    status, _, err = export(["--db", privacy_db, "-o", str(tmp_path), "--postcode-digits", "3"], capsys)
    assert status == 2 and err == "error: --postcode-digits applies to coarsened exports: add --coarsen\n"


@pytest.mark.parametrize("coarsen", [False, True])
def test_readme_describes_the_export(privacy_db, tmp_path, capsys, coarsen):
    args = ["--db", privacy_db, "-o", str(tmp_path), "--pseudonym-key", KEY, "--city", "Amsterdam", "-q"]
    assert export(args + (["--coarsen"] if coarsen else []), capsys)[0] == 0
    readme = (tmp_path / "README.txt").read_text(encoding="utf-8")
    header = (tmp_path / DEMOGRAPHICS_NAME).read_text(encoding="utf-8").splitlines()[0].split(",")
    for column in header:
        assert f"\n{column}: " in readme
    assert "personal data" in readme and "consent = true" in readme and "HMAC-SHA256" in readme
    assert "city 'Amsterdam'" in readme and "raters aged 18 or more" in readme
    assert "Left out for lack of consent: 4 ratings by 2" in " ".join(readme.split())
    assert ("Coarsened: ages as bands" in readme) == coarsen and ("Not coarsened" in readme) != coarsen
    assert "PERCEPT_PSEUDONYM_KEY" in readme and KEY not in readme
    assert oct((tmp_path / DEMOGRAPHICS_NAME).stat().st_mode & 0o777) == "0o600"
