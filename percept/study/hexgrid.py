"""Aggregate scored points into a hexagon grid measured in metres.

Points are projected into a metric CRS (by default the UTM zone of their
centroid), binned into flat-topped hexagons whose ``size`` is the edge length
(= centre-to-corner distance; adjacent centres lie ``size * sqrt(3)`` apart),
and every hexagon reports the mean score and the number of its points. Each
point falls into exactly one hexagon (nearest centre, by cube-coordinate
rounding). Hexagon outlines come back in WGS84 longitude/latitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import CRS, Transformer

from percept.data.crs import WGS84, to_lonlat, utm_crs
from percept.errors import PerceptError

SQRT3 = np.sqrt(3.0)


@dataclass
class HexGrid:
    """Hexagons that hold at least one point: axial cell ``(q, r)``, mean score, point count, outline."""

    size: float
    crs: CRS  # the metric CRS the grid was laid out in
    q: np.ndarray
    r: np.ndarray
    mean: np.ndarray
    count: np.ndarray
    cell_of_point: np.ndarray  # for each input point, the index of its hexagon

    def corners(self) -> np.ndarray:
        """(cells, 7, 2) closed outlines in the grid's CRS."""
        cx, cy = centres(self.q, self.r, self.size)
        angles = np.deg2rad(np.arange(0, 420, 60))
        return np.stack([cx[:, None] + self.size * np.cos(angles), cy[:, None] + self.size * np.sin(angles)], axis=2)

    def corners_lonlat(self) -> np.ndarray:
        """(cells, 7, 2) closed outlines in WGS84 longitude/latitude."""
        shape = self.corners()
        lon, lat = to_lonlat(shape[..., 0].ravel(), shape[..., 1].ravel(), self.crs)
        return np.stack([np.reshape(lon, shape.shape[:2]), np.reshape(lat, shape.shape[:2])], axis=2)


def centres(q: np.ndarray, r: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres of flat-topped axial cells."""
    return size * 1.5 * q, size * SQRT3 * (r + q / 2.0)


def cells(x: np.ndarray, y: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial ``(q, r)`` of the hexagon whose centre is nearest each point."""
    fq = (2.0 / 3.0) * x / size
    fr = (-x / 3.0 + SQRT3 / 3.0 * y) / size
    fs = -fq - fr
    q, r, s = np.round(fq), np.round(fr), np.round(fs)
    dq, dr, ds = np.abs(q - fq), np.abs(r - fr), np.abs(s - fs)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = ~fix_q & (dr > ds)
    q = np.where(fix_q, -r - s, q)
    r = np.where(fix_r, -q - s, r)
    return q.astype(np.int64), r.astype(np.int64)


def aggregate(x: np.ndarray, y: np.ndarray, values: np.ndarray, size: float, crs: CRS) -> HexGrid:
    """Bin metric coordinates (in ``crs``) into hexagons of edge ``size`` metres; mean and count per cell."""
    if not size > 0:
        raise PerceptError(f"--hex must be a positive size in metres, got {size}")
    x, y, values = (np.asarray(a, dtype=np.float64) for a in (x, y, values))
    if not (len(x) == len(y) == len(values)):
        raise ValueError("x, y and values need the same length")
    if len(x) == 0:
        raise PerceptError("no scored points to aggregate")
    q, r = cells(x, y, size)
    keys, cell_of_point = np.unique(np.stack([q, r], axis=1), axis=0, return_inverse=True)
    cell_of_point = cell_of_point.ravel()
    count = np.bincount(cell_of_point, minlength=len(keys))
    mean = np.bincount(cell_of_point, weights=values, minlength=len(keys)) / count
    return HexGrid(float(size), crs, keys[:, 0], keys[:, 1], mean, count, cell_of_point)


def aggregate_lonlat(lon: np.ndarray, lat: np.ndarray, values: np.ndarray, size: float,
                     crs: CRS | None = None) -> HexGrid:
    """Project WGS84 points into ``crs`` (default: UTM zone of their centroid) and aggregate them."""
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    if len(lon) == 0:
        raise PerceptError("no scored points to aggregate")
    crs = crs or utm_crs(float(np.mean(lon)), float(np.mean(lat)))
    if not crs.is_projected:
        raise PerceptError(f"--crs {crs.to_string()} is not a projected CRS in metres: hexagon sizes need one")
    x, y = Transformer.from_crs(WGS84, crs, always_xy=True).transform(lon, lat)
    return aggregate(x, y, values, size, crs)


def to_geojson(grid: HexGrid, name: str = "score") -> dict:
    """A FeatureCollection of hexagon polygons (WGS84) with ``name`` (mean), ``count``, ``q`` and ``r``."""
    outlines = grid.corners_lonlat()
    features = [{
        "type": "Feature",
        "properties": {"q": int(q), "r": int(r), name: float(m), "count": int(c)},
        "geometry": {"type": "Polygon", "coordinates": [outline.round(7).tolist()]},
    } for q, r, m, c, outline in zip(grid.q, grid.r, grid.mean, grid.count, outlines)]
    return {"type": "FeatureCollection", "features": features}
