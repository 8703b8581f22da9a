"""Coordinate reference systems shared by every wing: WGS84, a CRS from its name, the UTM zone of a place,
and the metric CRS a study measures in.

Survey points, locations and rated points are WGS84 longitude/latitude; distances (spatial blocks,
hexagons, buffers) are measured in metres in a projected CRS: the one a user names, else the UTM zone
of the points' centre.
"""

from __future__ import annotations

import numpy as np
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from percept.errors import PerceptError

WGS84 = CRS.from_epsg(4326)


def parse_crs(text: str, flag: str = "--crs") -> CRS:
    """A CRS from ``EPSG:xxxx``, an OGC URN or any definition pyproj understands."""
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise PerceptError(f"{flag} {text!r} is not a coordinate reference system pyproj knows "
                           "(use e.g. EPSG:28992)") from None


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone containing a longitude/latitude (EPSG 326xx north, 327xx south)."""
    zone = int(np.floor((lon + 180.0) / 6.0)) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def metric_crs(lon: np.ndarray, lat: np.ndarray, chosen: str | None = None, flag: str = "--crs") -> CRS:
    """``chosen`` (which must be projected), else the UTM zone of the points' centre."""
    if chosen:
        crs = parse_crs(chosen, flag)
        if not crs.is_projected:
            raise PerceptError(f"{flag} {chosen} is not a projected CRS in metres: give one such as a UTM zone")
        return crs
    return utm_crs(float(np.mean(lon)), float(np.mean(lat)))


def to_lonlat(x: np.ndarray, y: np.ndarray, source: CRS) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in ``source`` as WGS84 longitude/latitude."""
    return Transformer.from_crs(source, WGS84, always_xy=True).transform(x, y)
