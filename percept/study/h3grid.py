"""Aggregate scored points into Uber's H3 cells (the hexagon index many geo tools share).

Cells come from WGS84 longitude/latitude at a resolution of 0 (continents) to 15 (about
half a metre); resolution 9 cells have edges of about 200 m, 10 about 76 m. Needs the
``h3`` package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from percept.errors import PerceptError
from percept.extras import require

RESOLUTIONS = range(16)


@dataclass
class H3Cells:
    """Cells that hold at least one point: id, mean score, point count, WGS84 outline."""

    resolution: int
    ids: list[str]
    mean: np.ndarray
    count: np.ndarray
    cell_of_point: np.ndarray

    def outlines_lonlat(self) -> list[np.ndarray]:
        """Closed (corners + 1, 2) longitude/latitude rings, one per cell."""
        h3 = _h3()
        rings = []
        for cell in self.ids:
            ring = np.array(h3.cell_to_boundary(cell))[:, ::-1]
            rings.append(np.vstack([ring, ring[:1]]))
        return rings


def _h3():
    return require("maps", "h3", "--grid h3:RES")


def check_resolution(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise PerceptError(f"--grid h3:RES takes a resolution from 0 to 15 (9: ~200 m edges), got {resolution}")
    return resolution


def aggregate_h3(lon: np.ndarray, lat: np.ndarray, values: np.ndarray, resolution: int) -> H3Cells:
    """Mean score and count of the points in each H3 cell of ``resolution``."""
    h3 = _h3()
    check_resolution(resolution)
    lon, lat, values = (np.asarray(a, dtype=np.float64) for a in (lon, lat, values))
    if len(lon) == 0:
        raise PerceptError("no scored points to aggregate")
    cells = [h3.latlng_to_cell(a, b, resolution) for a, b in zip(lat.tolist(), lon.tolist())]
    ids, cell_of_point = np.unique(np.array(cells), return_inverse=True)
    cell_of_point = cell_of_point.ravel()
    count = np.bincount(cell_of_point, minlength=len(ids))
    mean = np.bincount(cell_of_point, weights=values, minlength=len(ids)) / count
    return H3Cells(resolution, [str(i) for i in ids], mean, count, cell_of_point)
