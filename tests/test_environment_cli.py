"""``percept environment``: survey GeoJSON and locations in, the 76 variables out (GeoJSON, CSV); user errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from percept.cli import main as percept_main
from percept.environment.keys import ENV_KEYS
from percept.environment.variables import environmental_variables

PLACES = [("a.jpg", 24.9414, 60.1699), ("b.jpg", 24.9460, 60.1680), ("c.jpg", 24.9380, 60.1650)]
EXTRACT_BOX = "W,S,E,N 24.9352,60.1642,24.9534,60.1791"  # what the Helsinki extract holds
# c.jpg lies about 160 m from the extract's west edge and 95 m from its south edge
EDGE_WARNING = (f"warning: the 300 m buffers of 1 of 3 points run past the edge of the extract's area ({EXTRACT_BOX}): "
                "their variables undercount; use an extract that reaches at least 300 m beyond every point\n")


def survey_geojson(path):
    """Three survey features: core properties and a stale environmental value to be replaced."""
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                 "properties": {"image_id": number, "url": f"https://x.example/img/{name}",
                                "average_walkability": 3.5, "shops_count_100": 999}}
                for number, (name, lon, lat) in enumerate(PLACES, 1)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def run(argv, capsys):
    code = percept_main.main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def expected(helsinki_index):
    lon, lat = np.array([p[1:] for p in PLACES]).T
    return environmental_variables(helsinki_index, lon, lat)


def test_survey_geojson_gets_the_variables_after_its_properties(tmp_path, helsinki_extract, expected, capsys):
    out = tmp_path / "with_env.geojson"
    code, text = run(["environment", "-g", str(survey_geojson(tmp_path / "data.geojson")), "--osm",
                      str(helsinki_extract), "-o", str(out)], capsys)
    assert code == 0, text
    assert "76 environmental variables for 3 points" in text and "UTM zone 35N" in text
    features = json.loads(out.read_text())["features"]
    assert [f["properties"]["image_id"] for f in features] == [1, 2, 3]
    keys = list(features[0]["properties"])
    assert keys == ["image_id", "url", "average_walkability", *ENV_KEYS]
    for number, feature in enumerate(features):
        props = feature["properties"]
        assert props["shops_count_100"] == expected["shops_count_100"][number] != 999
        assert isinstance(props["num_nodes_300"], int)
        for key in ENV_KEYS:
            assert props[key] == pytest.approx(expected[key][number], abs=1e-4)


def test_locations_to_csv_match_the_geojson_route(tmp_path, helsinki_extract, expected, capsys):
    locations = tmp_path / "locations.csv"
    pd.DataFrame(PLACES, columns=["image", "lon", "lat"]).assign(angle=[0, 90, 180]).to_csv(locations, index=False)
    out = tmp_path / "environment.csv"
    code, text = run(["environment", "--locations", str(locations), "--osm", str(helsinki_extract),
                      "-o", str(out), "-q", "--buffers", "100,300", "--chunk-size", "2"], capsys)
    assert code == 0, text
    assert text == EDGE_WARNING  # quiet: no progress or summary, only the warning
    table = pd.read_csv(out)
    assert list(table.columns) == ["image", "lon", "lat", "angle", *ENV_KEYS]
    assert table["image"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    np.testing.assert_allclose(table[list(ENV_KEYS)].to_numpy(float), expected.to_numpy(float), atol=1e-4)


@pytest.mark.parametrize("change, message", [
    ({"osm": "missing.osm.pbf"}, "missing.osm.pbf does not exist"),
    ({"buffers": "100,-3"}, "--buffers '100,-3'"),
    ({"buffers": "100,100"}, "distinct positive whole metres"),
    ({"out": "out.txt"}, "must end in .geojson or .csv"),
    ({"crs": "EPSG:4326"}, "not a projected CRS"),
    ({"crs": "nonsense"}, "--crs 'nonsense' is not a coordinate reference system"),
    ({"geometry": {"type": "LineString", "coordinates": [[24.9, 60.1], [24.91, 60.1]]}}, "feature 0 is not a Point"),
    ({"geometry": {"type": "Point", "coordinates": [124.9, 160.1]}}, "not between -90 and 90"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, helsinki_extract, capsys, change, message):
    survey = survey_geojson(tmp_path / "data.geojson")
    if "geometry" in change:
        data = json.loads(survey.read_text())
        data["features"][0]["geometry"] = change["geometry"]
        survey.write_text(json.dumps(data))
    argv = ["environment", "-g", str(survey), "--osm", str(tmp_path / change.get("osm", "x")) if "osm" in change
            else str(helsinki_extract), "-o", str(tmp_path / change.get("out", "out.geojson")),
            "--buffers", change.get("buffers", "100,300")]
    if "crs" in change:
        argv += ["--crs", change["crs"]]
    code, text = run(argv, capsys)
    assert code == 2
    assert message in text
    assert text.startswith("error: ") and text.count("\n") == 1 and "Traceback" not in text


def test_a_file_that_is_not_an_extract(tmp_path, capsys):
    bogus = tmp_path / "city.osm.pbf"
    bogus.write_bytes(b"this is not a protocol buffer" * 50)
    code, text = run(["environment", "-g", str(survey_geojson(tmp_path / "data.geojson")), "--osm", str(bogus),
                      "-o", str(tmp_path / "out.geojson"), "-q"], capsys)
    assert code == 2 and "cannot read" in text and "as an OpenStreetMap .osm.pbf extract" in text
    assert not (tmp_path / "out.geojson").exists()


def test_points_beyond_the_extract_are_counted_in_one_warning(tmp_path, helsinki_extract, capsys):
    """Buffers past the edge undercount: of the three places only c.jpg (95 m from the south edge) has a
    100 m buffer past it; a point 2 km east lies outside the extract altogether."""
    rows = [*PLACES, ("far.jpg", 24.99, 60.17)]
    locations = tmp_path / "locations.csv"
    pd.DataFrame(rows, columns=["image", "lon", "lat"]).to_csv(locations, index=False)
    code, text = run(["environment", "--locations", str(locations), "--osm", str(helsinki_extract), "-o",
                      str(tmp_path / "out.csv"), "-q", "--buffers", "100"], capsys)
    assert code == 0, text
    assert text == (f"warning: the 100 m buffers of 2 of 4 points run past the edge of the extract's area "
                    f"({EXTRACT_BOX}), 1 of them outside it: their variables undercount; use an extract that "
                    "reaches at least 100 m beyond every point\n")
    assert len(pd.read_csv(tmp_path / "out.csv")) == 4


def test_no_point_inside_the_extract_is_one_error_naming_both_areas(tmp_path, helsinki_extract, capsys):
    locations = tmp_path / "locations.csv"
    pd.DataFrame([("x.jpg", 4.90, 52.37), ("y.jpg", 4.91, 52.38)], columns=["image", "lon", "lat"]).to_csv(
        locations, index=False)
    out = tmp_path / "out.csv"
    code, text = run(["environment", "--locations", str(locations), "--osm", str(helsinki_extract), "-o", str(out)],
                     capsys)
    assert code == 2 and text.startswith("error: no point lies inside the OpenStreetMap extract")
    assert f"its data cover {EXTRACT_BOX}, the points W,S,E,N 4.9000,52.3700,4.9100,52.3800" in text
    assert text.count("\n") == 1 and "Traceback" not in text and not out.exists()
