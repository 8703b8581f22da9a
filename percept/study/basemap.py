"""Basemap lines (roads, water, outlines) for a map, from a local vector file; no tiles, no network.

``.gpkg``, ``.geojson``/``.json``, ``.shp`` and ``.fgb`` are read with geopandas (pyogrio);
``.osm.pbf`` extracts with pyrosm (its street network). Lines and polygon outlines are
reprojected into the map's CRS and cut to its extent. When the reader is not installed
the map is drawn without a basemap and a message says what to install. A map over an
OpenStreetMap extract credits it ("© OpenStreetMap contributors").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer

from percept.data.crs import WGS84
from percept.errors import PerceptError

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb")
PBF_SUFFIX = ".osm.pbf"
INSTALL = "pip install 'percept[osm]' (geopandas, pyogrio and pyrosm)"
OSM_ATTRIBUTION = "© OpenStreetMap contributors"


def attribution(path: str | Path | None, given: str | None = None) -> str | None:
    """The credit a map over the basemap ``path`` carries: ``given``, else OpenStreetMap's for an extract."""
    if given:
        return given
    if path is not None and Path(path).name.lower().endswith(PBF_SUFFIX):
        return OSM_ATTRIBUTION
    return None


def load_basemap(path: str | Path, crs: CRS, bounds: tuple[float, float, float, float],
                 log: Callable[[str], None]) -> list[np.ndarray] | None:
    """(n, 2) line arrays in ``crs`` within ``bounds`` (xmin, ymin, xmax, ymax); None when unreadable here."""
    path = Path(path)
    if not path.is_file():
        raise PerceptError(f"--basemap {path} does not exist")
    name = path.name.lower()
    if name.endswith(PBF_SUFFIX):
        frame = _read_pbf(path, crs, bounds, log)
    elif name.endswith(VECTOR_SUFFIXES):
        frame = _read_vector(path, log)
    else:
        raise PerceptError(f"--basemap {path}: give a {', '.join(VECTOR_SUFFIXES)} or {PBF_SUFFIX} file")
    if frame is None:
        return None
    if frame.crs is None:
        frame = frame.set_crs(WGS84)
    xmin, ymin, xmax, ymax = bounds
    frame = frame.to_crs(crs).cx[xmin:xmax, ymin:ymax]
    lines = [line for geometry in frame.geometry for line in geometry_lines(geometry)]
    if not lines:
        log(f"warning: --basemap {path} has no lines or outlines within the map's extent")
    return lines


def geometry_lines(geometry) -> list[np.ndarray]:
    """The line strings of a shapely geometry: lines as they are, polygons as their rings; points dropped."""
    if geometry is None or geometry.is_empty:
        return []
    kind = geometry.geom_type
    if kind in ("LineString", "LinearRing"):
        return [np.asarray(geometry.coords)[:, :2]]
    if kind == "Polygon":
        return [np.asarray(ring.coords)[:, :2] for ring in (geometry.exterior, *geometry.interiors)]
    if kind.startswith("Multi") or kind == "GeometryCollection":
        return [line for part in geometry.geoms for line in geometry_lines(part)]
    return []


def _read_vector(path: Path, log):
    try:
        import geopandas
    except ImportError:
        log(f"warning: --basemap {path} needs geopandas to read it ({INSTALL}); drawing the map without a basemap")
        return None
    try:
        return geopandas.read_file(path)
    except Exception as exc:  # pyogrio/fiona raise many kinds of errors for unreadable files
        raise PerceptError(f"cannot read --basemap {path}: {exc}") from None


def _read_pbf(path: Path, crs: CRS, bounds, log):
    try:
        import pyrosm
    except ImportError:
        log(f"warning: --basemap {path} needs pyrosm to read OpenStreetMap extracts ({INSTALL}); "
            "drawing the map without a basemap")
        return None
    xmin, ymin, xmax, ymax = bounds
    lon, lat = Transformer.from_crs(crs, WGS84, always_xy=True).transform([xmin, xmax, xmin, xmax],
                                                                            [ymin, ymin, ymax, ymax])
    box = [float(min(lon)), float(min(lat)), float(max(lon)), float(max(lat))]
    try:
        network = pyrosm.OSM(str(path), bounding_box=box).get_network(network_type="all")
    except Exception as exc:  # pyrosm raises plain exceptions for broken extracts
        raise PerceptError(f"cannot read --basemap {path} as an OpenStreetMap extract: {exc}") from None
    if network is None or network.empty:
        log(f"warning: --basemap {path} has no streets within the map's extent")
        return None
    return network
