"""``percept map``: printable maps (CRS kept, fixed colour range, counts, formats), H3 cells, basemaps, errors."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from percept.cli.common import ArgumentParser, report_errors
from percept.data.crs import parse_crs, utm_crs
from percept.errors import PerceptError
from percept.study.basemap import load_basemap
from percept.study.map_furniture import nice_length
from percept.study.maps import MapOptions, build_layer, parse_grid, parse_range, render
from percept.study.places import read_places

AMSTERDAM = Path(__file__).parent / "data" / "ams-20240227-walkability-map.geojson.gz"
SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def run_cli(*argv: str) -> int:
    parser = ArgumentParser(prog="percept")
    importlib.import_module("percept.cli.map").register(parser.add_subparsers(parser_class=ArgumentParser))
    args = parser.parse_args(list(argv))
    return report_errors(lambda: args.run(args))


def svg_texts(path: Path, group: str) -> list[str]:
    """The text of every <text> inside the SVG element with id ``group``."""
    root = ET.parse(path).getroot()
    element = next(e for e in root.iter() if e.get("id") == group)
    return [t.text for t in element.iter(f"{SVG}text")]


def write_points(path: Path, n: int = 400, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lon, lat, score = rng.uniform(4.85, 4.95, n), rng.uniform(52.35, 52.40, n), rng.uniform(1, 5, n)
    path.write_text("image,lon,lat,walkability\n" + "".join(
        f"i{i}.jpg,{a},{b},{c}\n" for i, (a, b, c) in enumerate(zip(lon, lat, score))))
    return np.column_stack([lon, lat, score])


def test_amsterdam_hexagons_keep_rd_new_in_png_svg_pdf_and_geojson(tmp_path):
    png, geojson = tmp_path / "ams.png", tmp_path / "ams.geojson"
    assert run_cli("map", "--rated", str(AMSTERDAM), "--category", "walkability", "--out", str(png), str(geojson),
                   "--format", "svg,pdf", "-q") == 0
    with Image.open(png) as image:
        assert image.info["dpi"][0] == pytest.approx(300, abs=0.5) and image.width > 2000
    assert (tmp_path / "ams.pdf").read_bytes()[:5] == b"%PDF-"
    svg = tmp_path / "ams.svg"
    assert svg_texts(svg, "legend")[:5] == ["1", "2", "3", "4", "5"]  # fixed 1-5 colour range
    assert "EPSG:28992" in svg_texts(svg, "crs-note")[0] and "5 km" in svg.read_text()  # CRS note, scale bar
    data = json.loads(geojson.read_text())
    assert data["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::28992"
    source = json.loads(gzip.decompress(AMSTERDAM.read_bytes()))
    assert len(data["features"]) == len(source["features"]) == 1073
    ring = np.array(data["features"][0]["geometry"]["coordinates"][0])
    assert np.allclose(ring, np.array(source["features"][0]["geometry"]["coordinates"][0]), atol=1e-3)  # RD metres


def test_a_wrong_input_crs_is_an_error_not_an_empty_map(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert run_cli("map", "--rated", str(AMSTERDAM), "--category", "walkability", "--input-crs", "EPSG:4326",
                   "--out", str(out)) == 2
    points = tmp_path / "points.csv"
    write_points(points)
    assert run_cli("map", "--rated", str(points), "--category", "walkability", "--input-crs", "EPSG:28992",
                   "--out", str(out)) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and not out.exists()
    assert "is not a longitude/latitude" in errors[0] and "--input-crs" in errors[0]
    assert "outside the area of use" in errors[1] and "look like longitude/latitude" in errors[1]


def test_points_become_counted_hexagons_and_sparse_ones_are_hidden(tmp_path):
    points = tmp_path / "points.csv"
    table = write_points(points, n=600)
    geojson = tmp_path / "hex.geojson"
    assert run_cli("map", "--rated", str(points), "--category", "walkability", "--hex", "300", "--out", str(geojson),
                   "-q") == 0
    every = json.loads(geojson.read_text())
    assert "crs" not in every and sum(f["properties"]["count"] for f in every["features"]) == 600  # WGS84 in, out
    assert run_cli("map", "--rated", str(points), "--category", "walkability", "--hex", "300", "--min-count", "4",
                   "--out", str(geojson), "-q") == 0
    kept = json.loads(geojson.read_text())["features"]
    counts = [f["properties"]["count"] for f in every["features"]]
    assert all(f["properties"]["count"] >= 4 for f in kept)
    assert len(kept) == sum(c >= 4 for c in counts) < len(counts)
    places = read_places(points, "walkability")
    assert np.allclose(places.values, table[:, 2])


def test_colour_range_is_fixed_unless_data_is_asked_for(tmp_path):
    points = tmp_path / "points.csv"
    write_points(points)
    places = read_places(points, "walkability")
    places.values = 2.0 + 0.5 * (places.values - 1) / 4  # all scores between 2 and 2.5
    for value_range, expected in (((1.0, 5.0), (1.0, 5.0)), ("own", (1.0, 5.0)), ("data", None)):
        options = MapOptions("walkability", hex_size=400.0, value_range=value_range)
        layer = build_layer(places, options)
        fig = render(layer, options)
        cells = next(c for c in fig.axes[0].collections if c.get_gid() == "cells")
        low, high = expected or (layer.values.min(), layer.values.max())
        assert (cells.norm.vmin, cells.norm.vmax) == pytest.approx((low, high))
        assert layer.crs.to_epsg() == 32631  # WGS84 input: drawn in its UTM zone
    assert parse_range("data") == "data" and parse_range(None) == parse_range("auto") == "own"
    assert parse_range("0,10") == (0.0, 10.0)


def test_h3_cells_hold_the_points_they_index(tmp_path):
    h3 = pytest.importorskip("h3")
    points = tmp_path / "points.csv"
    table = write_points(points, n=500)
    geojson = tmp_path / "h3.geojson"
    assert run_cli("map", "--rated", str(points), "--category", "walkability", "--grid", "h3:8", "--out", str(geojson),
                   "-q") == 0
    features = json.loads(geojson.read_text())["features"]
    assert sum(f["properties"]["count"] for f in features) == 500
    cells = [h3.latlng_to_cell(lat, lon, 8) for lon, lat in table[:, :2]]
    for feature in features:
        members = [i for i, c in enumerate(cells) if c == feature["properties"]["h3"]]
        assert feature["properties"]["count"] == len(members)
        assert feature["properties"]["mean"] == pytest.approx(table[members, 2].mean())
        assert h3.get_resolution(feature["properties"]["h3"]) == 8
    assert parse_grid("h3:9") == ("h3", 9) and parse_grid("hex") == ("hex", None)


def test_basemap_lines_from_a_geopackage_are_drawn_in_the_map_crs(tmp_path):
    geopandas = pytest.importorskip("geopandas")
    from shapely.geometry import LineString, Polygon

    roads = geopandas.GeoDataFrame(
        {"name": ["a", "b", "park"]},
        geometry=[LineString([(4.85, 52.35), (4.95, 52.38)]), LineString([(4.90, 52.33), (4.90, 52.40)]),
                  Polygon([(4.88, 52.36), (4.89, 52.36), (4.89, 52.37), (4.88, 52.36)])], crs="EPSG:4326")
    roads.to_file(tmp_path / "roads.gpkg", driver="GPKG")
    rd = parse_crs("EPSG:28992")
    lines = load_basemap(tmp_path / "roads.gpkg", rd, (110000, 470000, 135000, 495000), print)
    assert len(lines) == 3 and all(110000 < x < 135000 and 470000 < y < 495000 for line in lines for x, y in line)
    svg = tmp_path / "ams.svg"
    assert run_cli("map", "--rated", str(AMSTERDAM), "--category", "walkability", "--basemap",
                   str(tmp_path / "roads.gpkg"), "--out", str(svg), "-q") == 0
    assert 'id="basemap"' in svg.read_text()


def test_basemap_from_an_osm_extract():
    pyrosm = pytest.importorskip("pyrosm")
    extract = pyrosm.get_data("test_pbf")  # a small extract shipped with pyrosm
    crs = utm_crs(26.95, 60.53)
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform([26.93, 26.97], [60.52, 60.54])
    lines = load_basemap(extract, crs, (x[0], y[0], x[1], y[1]), print)
    assert len(lines) > 50 and all(line.shape[1] == 2 for line in lines)


def test_basemap_without_its_reader_degrades_with_a_message(tmp_path, monkeypatch):
    (tmp_path / "roads.gpkg").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "geopandas", None)
    messages = []
    assert load_basemap(tmp_path / "roads.gpkg", utm_crs(4.9, 52.4), (0, 0, 1, 1), messages.append) is None
    assert "pip install" in messages[0] and "without a basemap" in messages[0]
    with pytest.raises(PerceptError):
        load_basemap(tmp_path / "roads.txt", utm_crs(4.9, 52.4), (0, 0, 1, 1), messages.append)


def test_scale_bar_lengths_are_round():
    assert nice_length(23_000) == 2000 and nice_length(7_000) == 1000 and nice_length(2_600) == 500


def test_map_cli_errors_are_one_line(tmp_path, capsys):
    points = tmp_path / "points.csv"
    write_points(points, n=50)
    base = ["map", "--rated", str(points), "--category", "walkability"]
    out = ["--out", str(tmp_path / "x.png")]
    cases = [
        ["map", "--rated", str(tmp_path / "missing.csv"), "--category", "walkability", *out],
        [*base, "--out", str(tmp_path / "x.txt")],
        [*base, "--crs", "EPSG:nonsense", *out],
        [*base, "--crs", "EPSG:4326", *out],
        [*base, "--range", "5,1", *out],
        [*base, "--cmap", "RdYlGn", *out],
        [*base, "--cmap", "no-such-map", *out],
        [*base, "--grid", "h3:99", *out],
        [*base, "--grid", "h3:9", "--hex", "100", *out],
        [*base, "--format", "tiff", *out],
        [*base, "--min-count", "1000", *out],
        ["map", "--rated", str(AMSTERDAM), "--category", "walkability", "--min-count", "2", *out],
        [*base, "--basemap", str(tmp_path / "missing.gpkg"), *out],
    ]
    for case in cases:
        assert run_cli(*case) == 2, case
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == len(cases) and all(line.startswith("error: ") for line in errors)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
def test_svg_legend_reads_1_to_5_in_chromium(tmp_path):
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    svg = tmp_path / "ams.svg"
    assert run_cli("map", "--rated", str(AMSTERDAM), "--category", "walkability", "--out", str(svg), "-q") == 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(svg.as_uri())
        ticks = page.eval_on_selector_all("#legend text", "nodes => nodes.map(n => n.textContent)")
        assert ticks[:5] == ["1", "2", "3", "4", "5"]
        assert page.locator("#legend").bounding_box()["height"] > 300  # drawn, not empty
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "map-amsterdam-svg.png"))
        browser.close()
