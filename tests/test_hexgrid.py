"""Hexagon aggregation and the ``percept map`` command (also on the real Amsterdam hexagon map)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from percept.cli.common import ArgumentParser, report_errors
from percept.study.hexgrid import (
    aggregate,
    aggregate_lonlat,
    centres,
    parse_crs,
    to_geojson,
    utm_crs,
)

AMSTERDAM_NAME = "ams-20240227-walkability-map.geojson.gz"
AMSTERDAM = Path(__file__).parent / "data" / AMSTERDAM_NAME


def run_cli(*argv: str) -> int:
    parser = ArgumentParser(prog="percept")
    importlib.import_module("percept.cli.map").register(parser.add_subparsers(parser_class=ArgumentParser))
    args = parser.parse_args(list(argv))
    return report_errors(lambda: args.run(args))


def test_every_point_lands_in_exactly_one_hexagon():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 5000, 4000), rng.uniform(0, 5000, 4000)
    values = rng.uniform(1, 5, 4000)
    grid = aggregate(x, y, values, 150.0, utm_crs(4.9, 52.37))
    assert grid.count.sum() == 4000
    assert np.array_equal(np.bincount(grid.cell_of_point, minlength=len(grid.q)), grid.count)
    cx, cy = centres(grid.q, grid.r, 150.0)
    distance = np.hypot(x - cx[grid.cell_of_point], y - cy[grid.cell_of_point])
    assert distance.max() <= 150.0 + 1e-9  # inside its hexagon's circumcircle
    for cell in range(len(grid.q)):
        members = grid.cell_of_point == cell
        assert grid.mean[cell] == pytest.approx(values[members].mean())
        # its own centre is the nearest of all centres
        others = np.hypot(x[members, None] - cx[None, :], y[members, None] - cy[None, :])
        assert np.all(others[:, cell] <= others.min(axis=1) + 1e-9)


def test_lonlat_aggregation_picks_utm_and_writes_wgs84_polygons():
    lon = np.array([4.90, 4.9001, 4.95, 4.80])
    lat = np.array([52.37, 52.3701, 52.36, 52.40])
    grid = aggregate_lonlat(lon, lat, np.array([1.0, 3.0, 4.0, 5.0]), 100)
    assert grid.crs.to_epsg() == 32631
    assert grid.count.sum() == 4 and 2.0 in grid.mean
    collection = to_geojson(grid, "walkability")
    assert len(collection["features"]) == len(grid.q)
    ring = np.array(collection["features"][0]["geometry"]["coordinates"][0])
    assert ring.shape == (7, 2) and np.allclose(ring[0], ring[-1])
    assert 4.7 < ring[:, 0].min() and ring[:, 1].max() < 52.5
    other = aggregate_lonlat(lon, lat, np.ones(4), 100, parse_crs("EPSG:28992"))
    assert other.crs.to_epsg() == 28992


def test_map_cli_writes_png_and_geojson_from_points(tmp_path):
    rated = tmp_path / "rated.csv"
    rng = np.random.default_rng(1)
    lines = ["image,lon,lat,walkability"] + [f"i{i}.jpg,{4.85 + rng.uniform(0, 0.1)},{52.35 + rng.uniform(0, 0.05)},"
                                            f"{rng.uniform(1, 5)}" for i in range(300)]
    rated.write_text("\n".join(lines) + "\n")
    png, geojson = tmp_path / "map.png", tmp_path / "map.geojson"
    assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--hex", "200",
                   "--out", str(png), str(geojson), "-q") == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(geojson.read_text())
    assert sum(f["properties"]["count"] for f in data["features"]) == 300


def test_map_cli_renders_the_amsterdam_hexagons(tmp_path):
    png, geojson = tmp_path / "ams.png", tmp_path / "ams.geojson"
    assert run_cli("map", "--rated", str(AMSTERDAM), "--category", "walkability", "--out", str(png), str(geojson),
                   "-q") == 0
    assert png.stat().st_size > 10_000
    data = json.loads(geojson.read_text())
    assert len(data["features"]) == 1073  # polygons as published, moved from EPSG:28992 to WGS84
    lon, lat = np.array(data["features"][0]["geometry"]["coordinates"][0]).T
    assert 4.7 < lon.min() < lon.max() < 5.1 and 52.2 < lat.min() < lat.max() < 52.5
    hexed = tmp_path / "hex.geojson"
    assert run_cli("map", "--rated", str(AMSTERDAM), "--category", "walkability", "--hex", "400",
                   "--out", str(hexed), "-q") == 0
    assert sum(f["properties"]["count"] for f in json.loads(hexed.read_text())["features"]) == 1073


def test_map_cli_errors_are_one_line(tmp_path, capsys):
    assert run_cli("map", "--rated", str(tmp_path / "missing.csv"), "--category", "walkability",
                   "--out", str(tmp_path / "x.png")) == 2
    rated = tmp_path / "rated.geojson"
    rated.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"walkability": 3.0}, "geometry": {"type": "Point", "coordinates": [4.9, 52.4]}}]}))
    assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--out", str(tmp_path / "x.txt")) == 2
    assert run_cli("map", "--rated", str(rated), "--category", "walkability", "--crs", "EPSG:nonsense",
                   "--out", str(tmp_path / "x.png")) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
