"""Hexagon aggregation in metres (the ``percept map`` command is tested in test_maps.py)."""

from __future__ import annotations

import numpy as np
import pytest

from percept.data.crs import parse_crs, utm_crs
from percept.study.hexgrid import aggregate, aggregate_lonlat, centres, to_geojson


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
