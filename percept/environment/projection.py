"""The metric projection the environmental variables are measured in, and moving geometries into it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import CRS, Transformer

from percept.data.crs import WGS84


@dataclass(frozen=True)
class Projection:
    """WGS84 longitude/latitude to and from a metric CRS."""

    crs: CRS

    def geometries(self, geometries: np.ndarray) -> np.ndarray:
        """Shapely geometries (longitude/latitude) in the metric CRS."""
        forward = Transformer.from_crs(WGS84, self.crs, always_xy=True)
        return shapely.transform(np.asarray(geometries, dtype=object),
                                 lambda xy: np.column_stack(forward.transform(xy[:, 0], xy[:, 1])))

    def points(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Point geometries in the metric CRS."""
        x, y = Transformer.from_crs(WGS84, self.crs, always_xy=True).transform(lon, lat)
        return shapely.points(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))

    def to_lonlat(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metric coordinates back to longitude/latitude."""
        lon, lat = Transformer.from_crs(self.crs, WGS84, always_xy=True).transform(x, y)
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
