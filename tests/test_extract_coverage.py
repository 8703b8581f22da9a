"""Which points an extract covers: outside its area, or with buffers running past its edge (checked against
geodesic distances to the edges)."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import CRS, Geod

from percept.data.crs import metric_crs
from percept.environment.coverage import coverage
from percept.environment.projection import Projection
from percept.errors import PerceptError

BOUNDS = (24.90, 60.15, 24.98, 60.20)  # about 4.4 x 5.6 km


def geodesic_edge_distance(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Metres from each point inside BOUNDS to its nearest edge: along its parallel to the west and east
    edges, along its meridian to the south and north edges."""
    west, south, east, north = BOUNDS
    geod = Geod(ellps="WGS84")
    ones = np.ones_like(lon)
    sides = [geod.inv(lon, lat, west * ones, lat)[2], geod.inv(lon, lat, east * ones, lat)[2],
             geod.inv(lon, lat, lon, south * ones)[2], geod.inv(lon, lat, lon, north * ones)[2]]
    return np.min(sides, axis=0)


@pytest.mark.parametrize("radius", [100, 300, 1000])
def test_buffers_past_the_edge_match_geodesic_distances(radius):
    rng = np.random.default_rng(radius)
    lon, lat = rng.uniform(24.89, 24.99, 400), rng.uniform(60.145, 60.205, 400)
    west, south, east, north = BOUNDS
    inside = (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)
    distance = np.where(inside, geodesic_edge_distance(lon, lat), -1.0)
    clear = np.abs(distance - radius) > 0.01 * radius  # leave out points within 1 % of the radius
    lon, lat, inside, distance = lon[clear], lat[clear], inside[clear], distance[clear]
    found = coverage(lon, lat, BOUNDS, radius, Projection(metric_crs(lon, lat)), "city.osm.pbf")
    assert found.points == len(lon)
    assert found.outside == int((~inside).sum()) > 0
    assert found.past_edge == int((distance < radius).sum()) > found.outside
    assert f"{found.past_edge} of {len(lon)} points" in found.warning()
    assert "W,S,E,N 24.9000,60.1500,24.9800,60.2000" in found.warning()


def test_points_well_inside_give_no_warning():
    lon, lat = np.array([24.94, 24.945]), np.array([60.175, 60.17])
    found = coverage(lon, lat, BOUNDS, 300, Projection(CRS.from_epsg(32635)), "city.osm.pbf")
    assert (found.outside, found.past_edge, found.warning()) == (0, 0, None)


@pytest.mark.parametrize("bounds, message", [
    (BOUNDS, ("no point lies inside the OpenStreetMap extract city.osm.pbf: its data cover "
              "W,S,E,N 24.9000,60.1500,24.9800,60.2000, the points W,S,E,N 60.1700,24.9400,60.1800,24.9500")),
    (None, "city.osm.pbf holds no data near the points (W,S,E,N 60.1700,24.9400,60.1800,24.9500)"),
])
def test_no_point_inside_is_an_error_naming_both_areas(bounds, message):
    lon, lat = np.array([60.17, 60.18]), np.array([24.94, 24.95])  # latitude and longitude swapped
    with pytest.raises(PerceptError) as raised:
        coverage(lon, lat, bounds, 300, Projection(CRS.from_epsg(32635)), "city.osm.pbf")
    assert message in str(raised.value) and "longitude, latitude" in str(raised.value)
