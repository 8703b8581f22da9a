"""``percept survey add-images`` against a real PostgreSQL + PostGIS server: a survey of the western part of a
synthetic city, a model, ``percept suggest`` on the whole city, and the suggestions put into the survey
database: a dry run changes nothing, ``--apply`` adds exactly the new images once, and the survey
exported afterwards holds no rating of them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from postgres_fixtures import READER, READER_PASSWORD, TemporaryPostgres, load_sample_survey, missing_reason

from percept.categories import CATEGORIES
from percept.city.survey_images import NewImage, images_to_add
from percept.cli.dropin import main as dropin_main
from percept.cli.main import main as percept_main
from percept.errors import PerceptError
from percept.synthetic.simulation import URL_PREFIX
from percept.synthetic.spatial import generate_spatial_survey

WRITER, WRITER_PASSWORD = "survey_adder", "wr1te-Pa55-only"
ADDED = 15

# ---------------------------------------------------------------- pure parts


def suggestions(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "lon", "lat", "angle"])


def test_urls_are_the_prefix_and_the_file_name_each_once():
    table = suggestions([("a.jpg", 4.9, 52.3, 90.0), ("b.jpg", 4.8, 52.2, float("nan")), ("a.jpg", 4.9, 52.3, 90.0)])
    images = images_to_add(table, "https://x.example/img", "/srv/img/")
    assert images == [NewImage("https://x.example/img/a.jpg", 4.9, 52.3, 90.0, "/srv/img/a.jpg"),
                      NewImage("https://x.example/img/b.jpg", 4.8, 52.2, None, "/srv/img/b.jpg")]
    assert images_to_add(table, "https://x.example/img/")[0].url == "https://x.example/img/a.jpg"
    assert images_to_add(table, "https://x.example/img/")[0].system_path is None


@pytest.mark.parametrize("rows, prefix, message", [
    ([("a.jpg", 4.9, 52.3, 0.0)], "x.example/img/", "--url-prefix must be the http(s) address"),
    ([("a.jpg", float("nan"), 52.3, 0.0)], "https://x/", "image a.jpg has no location"),
    ([("a b.jpg", 4.9, 52.3, 0.0)], "https://x/", "cannot be the last part of its URL"),
    ([("a?.jpg", 4.9, 52.3, 0.0)], "https://x/", "cannot be the last part of its URL"),
])
def test_unusable_suggestions_are_refused(rows, prefix, message):
    with pytest.raises(PerceptError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        images_to_add(suggestions(rows), prefix)


# ---------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def postgres():
    reason = missing_reason()
    if reason:
        pytest.skip(f"survey database tests need PostgreSQL with PostGIS: {reason}")
    with TemporaryPostgres() as server:
        server.admin_execute(f"CREATE ROLE {WRITER} LOGIN PASSWORD '{WRITER_PASSWORD}'")
        yield server


@pytest.fixture(scope="module")
def study(postgres, tmp_path_factory):
    """The western half of a spatial synthetic city as the survey database, its model, and 15 suggestions plus
    one survey image (already in the database) as a CSV."""
    root = tmp_path_factory.mktemp("addimages")
    city = root / "city"
    generate_spatial_survey(city, n_panoramas=160, dim=16, ratings_per_image=4.0, seed=4)
    data = json.loads((city / "data.geojson").read_text())
    west = [f for f in data["features"] if f["geometry"]["coordinates"][0] < 4.9]
    survey = root / "survey"
    survey.mkdir()
    (survey / "data.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": west}))
    ratings = pd.read_csv(city / "demo.csv", dtype=str, keep_default_na=False)
    kept = {str(f["properties"]["image_id"]) for f in west}
    ratings[ratings["image_id"].isin(kept)].to_csv(survey / "demo.csv", index=False)
    locations = pd.DataFrame([(f["properties"]["url"].rsplit("/", 1)[-1], *f["geometry"]["coordinates"], 30.0 * i)
                              for i, f in enumerate(data["features"])], columns=["image", "lon", "lat", "angle"])
    locations.to_csv(city / "locations.csv", index=False)
    database = postgres.new_database("addimages")
    load_sample_survey(postgres.admin_conninfo(database), survey, city="Amsterdam")
    postgres.admin_execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {WRITER}; "
                           f"GRANT INSERT ON image, image_geo TO {WRITER}", database)
    assert dropin_main(["-g", str(survey / "data.geojson"), "-e", str(city / "embeddings"), "-M", "synthetic",
                        "-k", "5", "--export", str(root / "model.npz"), "-q"]) == 0
    picked = root / "picked.csv"
    assert percept_main(["suggest", "--model", str(root / "model.npz"), "-e", str(city / "embeddings"),
                         "--locations", str(city / "locations.csv"), "-n", str(ADDED), "-o", str(picked), "-q"]) == 0
    table = pd.read_csv(picked)
    known = west[0]["properties"]["url"].rsplit("/", 1)[-1]
    row = locations[locations["image"] == known].iloc[0]
    extra = pd.DataFrame([{"rank": ADDED + 1, "image": known, "lon": row["lon"], "lat": row["lat"],
                           "angle": row["angle"]}])
    with_known = root / "suggestions.csv"
    pd.concat([table, extra], ignore_index=True).to_csv(with_known, index=False)
    return root, database, with_known, table, known


def snapshot(postgres, database) -> list[tuple]:
    """Every image and image_geo row, as text."""
    import psycopg

    with psycopg.connect(postgres.admin_conninfo(database)) as connection:
        rows = connection.execute("SELECT i.image_id, i.system_path, i.url, i.cityname, i.enabled, g.angle_deg, "
                                  "ST_X(g.geo), ST_Y(g.geo), ST_SRID(g.geo) FROM image i "
                                  "LEFT JOIN image_geo g ON g.image_id = i.image_id ORDER BY i.image_id").fetchall()
    return rows


def add(postgres, database, csv: Path, *extra: str, user=WRITER, password=WRITER_PASSWORD) -> list[str]:
    return ["survey", "add-images", "--db", postgres.url(database, user, password), str(csv), "--url-prefix",
            URL_PREFIX, "--city", "Amsterdam-east", *extra]


def test_a_dry_run_changes_nothing_and_apply_adds_the_new_images_once(postgres, study, capsys):
    root, database, csv, table, known = study
    before = snapshot(postgres, database)
    assert percept_main(add(postgres, database, csv)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dry run: would add {ADDED} images to {WRITER}@127.0.0.1:")
    assert "skipped 1 already in the survey (1 rated, 0 not yet rated)" in out
    assert sum(line.startswith("  would add ") for line in out.splitlines()) == ADDED
    assert snapshot(postgres, database) == before

    assert percept_main(add(postgres, database, csv, "--apply")) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"added {ADDED} images to ")
    after = snapshot(postgres, database)
    new = after[len(before):]
    assert after[:len(before)] == before and len(new) == ADDED
    for row, (_, suggestion) in zip(new, table.iterrows()):  # in rank order
        image_id, system_path, url, cityname, enabled, angle, lon, lat, srid = row
        assert url == URL_PREFIX + suggestion["image"]
        assert (system_path, cityname, enabled, srid) == (None, "Amsterdam-east", False, 4326)
        assert (lon, lat, angle) == pytest.approx((suggestion["lon"], suggestion["lat"], suggestion["angle"]))
        assert f"  added {image_id} {url}" in out

    assert percept_main(add(postgres, database, csv, "--apply")) == 0
    out = capsys.readouterr().out
    assert out.startswith("added 0 images")
    assert f"skipped {ADDED + 1} already in the survey (1 rated, {ADDED} not yet rated)" in out
    assert snapshot(postgres, database) == after

    exported = root / "exported"
    assert percept_main(["survey", "export", "--db", postgres.url(database), "-o", str(exported), "-q"]) == 0
    features = json.loads((exported / "data.geojson").read_text())["features"]
    exported_urls = {f["properties"]["url"] for f in features}
    added_ids = {row[0] for row in new}
    assert not exported_urls & {row[2] for row in new}  # no rating of them: not among the rated images
    assert URL_PREFIX + known in exported_urls
    demographics = pd.read_csv(exported / "demographics.csv")
    assert not set(demographics["image_id"]) & added_ids
    # --include-unrated lists them as unrated: null averages, zero counts, at their point
    listed = root / "listed"
    assert percept_main(["survey", "export", "--db", postgres.url(database), "-o", str(listed), "--include-unrated",
                         "-q"]) == 0
    by_url = {f["properties"]["url"]: f for f in json.loads((listed / "data.geojson").read_text())["features"]}
    for image_id, _, url, _, _, _, lon, lat, _ in new:
        props = by_url[url]["properties"]
        assert props["image_id"] == image_id
        assert all(props[f"average_{c}"] is None and props[f"count_{c}"] == 0 for c in CATEGORIES)
        assert by_url[url]["geometry"]["coordinates"] == pytest.approx([lon, lat])


def test_only_the_first_n_and_a_path_prefix(postgres, study, capsys):
    _, _, csv, table, _ = study
    database = postgres.new_database("firstn")
    assert percept_main(["survey", "add-images", "--db", postgres.admin_conninfo(database), str(csv),
                         "--url-prefix", URL_PREFIX, "-n", "3", "--path-prefix", "/srv/img", "--apply", "-q"]) == 0
    assert capsys.readouterr().out == ""
    rows = snapshot(postgres, database)
    assert [r[2] for r in rows] == [URL_PREFIX + n for n in table["image"][:3]]
    assert [r[1] for r in rows] == [f"/srv/img/{n}" for n in table["image"][:3]]
    assert all(r[3] is None for r in rows)  # no --city


def test_a_user_who_may_only_read_gets_the_grant_to_ask_for(postgres, study, capsys):
    _, _, csv, _, _ = study
    database = postgres.new_database("readonly")  # the schema, and SELECT granted to the reader
    before = snapshot(postgres, database)
    assert percept_main(add(postgres, database, csv, "--apply", user=READER, password=READER_PASSWORD)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the database user may not add images to ") and "grant it" in err
    assert READER_PASSWORD not in err
    assert snapshot(postgres, database) == before


def test_a_wrong_password_is_never_printed(postgres, study, capsys):
    _, database, csv, _, _ = study
    for extra in ([], ["--apply"]):
        assert percept_main(add(postgres, database, csv, *extra, password="n0t-the-Pa55word")) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: cannot connect to the survey database") and "n0t-the-Pa55word" not in err
