"""Nearest rated locations around a point: a k-d tree on the unit sphere, inverse-distance weighting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

from percept.errors import PerceptError

EARTH_RADIUS_M = 6_371_008.8
#: Distances below this count as this many metres in the weights (a click right on a point).
MIN_DISTANCE_M = 1.0


def unit_xyz(lon: ArrayLike, lat: ArrayLike) -> np.ndarray:
    """Points on the unit sphere for longitudes and latitudes in degrees."""
    lon, lat = np.radians(np.asarray(lon, dtype=np.float64)), np.radians(np.asarray(lat, dtype=np.float64))
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=-1)


def check_point(lat: float, lon: float) -> None:
    if not (-90.0 <= lat <= 90.0) or not (-180.0 <= lon <= 180.0):
        raise PerceptError(f"latitude must lie in [-90, 90] and longitude in [-180, 180], got {lat}, {lon}")


@dataclass(frozen=True)
class Nearby:
    """Indices of the points within the radius, nearest first, their distances (m) and IDW weights."""

    index: np.ndarray
    distance: np.ndarray
    weight: np.ndarray

    def weighted(self, values: np.ndarray) -> np.ndarray:
        """Inverse-distance-weighted mean of ``values[index]`` (rows), ignoring NaN per column."""
        rows = np.asarray(values, dtype=np.float64)[self.index]
        weights = np.where(np.isnan(rows), 0.0, self.weight[:, None])
        total = weights.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, np.nansum(rows * weights, axis=0) / total, np.nan)


class SpatialIndex:
    """Points (lon, lat in degrees) indexed for radius queries in metres."""

    def __init__(self, lon: np.ndarray, lat: np.ndarray, power: float = 2.0):
        self.lon = np.asarray(lon, dtype=np.float64)
        self.lat = np.asarray(lat, dtype=np.float64)
        self.power = power
        self.tree = cKDTree(unit_xyz(self.lon, self.lat)) if len(self.lon) else None

    def __len__(self) -> int:
        return len(self.lon)

    def within(self, lat: float, lon: float, radius_m: float) -> Nearby:
        """The points within ``radius_m`` metres (great-circle) of (lat, lon)."""
        check_point(lat, lon)
        if self.tree is None:
            empty = np.empty(0)
            return Nearby(empty.astype(np.int64), empty, empty)
        centre = unit_xyz(lon, lat)
        chord = 2.0 * np.sin(min(radius_m / EARTH_RADIUS_M, np.pi) / 2.0)
        index = np.asarray(self.tree.query_ball_point(centre, chord), dtype=np.int64)
        distance = great_circle_m(lat, lon, self.lat[index], self.lon[index])
        keep = distance <= radius_m
        index, distance = index[keep], distance[keep]
        order = np.lexsort((index, distance))
        index, distance = index[order], distance[order]
        weight = 1.0 / np.maximum(distance, MIN_DISTANCE_M) ** self.power
        return Nearby(index, distance, weight)

    def in_box(self, west: float, south: float, east: float, north: float, limit: int) -> np.ndarray:
        """Indices of at most ``limit`` points inside a box (evenly thinned when there are more)."""
        inside = np.flatnonzero((self.lon >= west) & (self.lon <= east) & (self.lat >= south) & (self.lat <= north))
        if len(inside) > limit:
            inside = inside[np.linspace(0, len(inside) - 1, limit).astype(np.int64)]
        return inside


def great_circle_m(lat: float, lon: float, lats: ArrayLike, lons: ArrayLike) -> np.ndarray:
    """Haversine distance in metres from one point to many."""
    phi1, phi2 = np.radians(lat), np.radians(np.asarray(lats, dtype=np.float64))
    dphi, dlmb = phi2 - phi1, np.radians(np.asarray(lons, dtype=np.float64) - lon)
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlmb / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
