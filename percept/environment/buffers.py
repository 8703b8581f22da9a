"""Buffers around places: 64-sided discs in a metric CRS, and a cheap test for what lies wholly inside one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

QUAD_SEGMENTS = 16  # a buffer is a 64-sided polygon, as geopandas' default buffer


@dataclass
class Buffers:
    """Discs of one radius (metres) around points ``x``, ``y``: their polygons and areas."""

    x: np.ndarray
    y: np.ndarray
    radius: float
    polygons: np.ndarray
    area: np.ndarray

    @classmethod
    def around(cls, points: np.ndarray, radius: float) -> Buffers:
        polygons = shapely.buffer(points, radius, quad_segs=QUAD_SEGMENTS)
        return cls(shapely.get_x(points), shapely.get_y(points), float(radius), polygons, shapely.area(polygons))

    def __len__(self) -> int:
        return len(self.polygons)

    def holds_boxes(self, which: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        """Whether buffer ``which[i]`` surely holds the whole box ``bounds[i]`` (minx, miny, maxx, maxy).

        True when the box's farthest corner lies within the polygon's inscribed circle; False
        means "clip to find out".
        """
        inner = self.radius * np.cos(np.pi / (4 * QUAD_SEGMENTS)) * (1 - 1e-9)
        x, y = self.x[which], self.y[which]
        dx = np.maximum(np.abs(x - bounds[:, 0]), np.abs(x - bounds[:, 2]))
        dy = np.maximum(np.abs(y - bounds[:, 1]), np.abs(y - bounds[:, 3]))
        return dx * dx + dy * dy < inner * inner
