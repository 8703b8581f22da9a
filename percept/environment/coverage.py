"""How well an extract covers the points to measure: points outside its data, buffers past its edge.

The extract's area is the box of everything it holds (W, S, E, N in degrees). A buffer runs past
its edge when the disc of the largest buffer radius around a point is not wholly inside that box,
measured in the metric CRS the variables are measured in: there, the variables undercount.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from percept.environment.projection import Projection
from percept.errors import PerceptError

#: Points added along each side of the box before it is projected, so its edges stay true in metres.
EDGE_POINTS = 64


@dataclass(frozen=True)
class Coverage:
    """How many points lie outside the extract's area, and how many buffers (theirs included) run past it."""

    points: int
    outside: int
    past_edge: int
    radius: float  # the largest buffer, in metres
    bounds_text: str

    def warning(self) -> str | None:
        """One line when some points' largest buffer is not wholly inside the extract's area, else None."""
        if not self.past_edge:
            return None
        outside = f", {self.outside} of them outside it" if self.outside else ""
        return (f"warning: the {self.radius:g} m buffers of {self.past_edge} of {self.points} points run past the "
                f"edge of the extract's area ({self.bounds_text}){outside}: their variables undercount; use an "
                f"extract that reaches at least {self.radius:g} m beyond every point")


def box_text(bounds) -> str:
    """``W,S,E,N 24.9352,60.1642,24.9534,60.1791``."""
    return "W,S,E,N " + ",".join(f"{b:.4f}" for b in bounds)


def coverage(lon: np.ndarray, lat: np.ndarray, bounds: tuple[float, float, float, float] | None, radius: float,
             projection: Projection, source: str) -> Coverage:
    """Where the points (WGS84) lie against the extract's data ``bounds`` (None: it holds none near them).

    Refuses points none of which lie inside the area, naming both boxes.
    """
    points = box_text((np.min(lon), np.min(lat), np.max(lon), np.max(lat)))
    if bounds is None:
        raise PerceptError(f"the OpenStreetMap extract {source} holds no data near the points ({points}): "
                           "give an extract that covers them (and check that coordinates are longitude, latitude)")
    west, south, east, north = bounds
    inside = (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)
    if not inside.any():
        raise PerceptError(f"no point lies inside the OpenStreetMap extract {source}: its data cover "
                           f"{box_text(bounds)}, the points {points}: give an extract that covers the points "
                           "(and check that coordinates are longitude, latitude)")
    area = projection.geometries(np.array([shapely.segmentize(shapely.box(*bounds), _step(bounds))]))[0]
    centres = projection.points(lon, lat)
    within = inside.copy()
    within[inside] = shapely.distance(area.exterior, centres[inside]) >= radius
    return Coverage(len(lon), int((~inside).sum()), int((~within).sum()), radius, box_text(bounds))


def _step(bounds) -> float:
    """The longest segment (degrees) that splits the box's longer side into :data:`EDGE_POINTS`."""
    west, south, east, north = bounds
    return max(east - west, north - south, 1e-9) / EDGE_POINTS
