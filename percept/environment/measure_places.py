"""Measure places from an extract file: read what lies around them, index it once, measure in chunks.

From a large extract only the part within ``MARGIN_M`` metres beyond the largest buffer around
the points is read, so a country extract serves a city; the margin keeps the street counts and
simplified streets near the buffers as they are on the whole network. The last extract indexed
is kept, so measuring more places of the same area in one process (the city demo) reads it once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from percept.data.crs import metric_crs
from percept.environment.coverage import Coverage, coverage
from percept.environment.keys import BUFFER_SIZES
from percept.environment.osm_extract import OsmExtract, read_osm_extract, read_whole
from percept.environment.projection import Projection
from percept.environment.variables import EnvironmentIndex, build_environment_index, environmental_variables

MARGIN_M = 1000.0
METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class MeasureOptions:
    """Which buffers, in which metric CRS, how many points at once, and whether to show progress."""

    buffer_sizes: tuple[int, ...] = BUFFER_SIZES
    crs: str | None = None  # metric CRS; None: the UTM zone of the points
    chunk_size: int = 2000
    quiet: bool = False


@dataclass
class MeasuredPlaces:
    """The variables (one row per point), the CRS measured in, the load time, and how the extract covers them."""

    variables: pd.DataFrame
    crs_name: str
    load_seconds: float
    coverage: Coverage


def reading_box(lon: np.ndarray, lat: np.ndarray, metres: float) -> tuple[float, float, float, float]:
    """The points' extent grown by ``metres`` on every side: (W, S, E, N) in degrees."""
    north = float(np.max(np.abs(lat)))
    dlat = metres / METRES_PER_DEGREE
    dlon = metres / (METRES_PER_DEGREE * max(np.cos(np.radians(min(north + dlat, 89.0))), 1e-6))
    return (max(float(np.min(lon)) - dlon, -180.0), max(float(np.min(lat)) - dlat, -90.0),
            min(float(np.max(lon)) + dlon, 180.0), min(float(np.max(lat)) + dlat, 90.0))


def data_bounds(extract: OsmExtract) -> tuple[float, float, float, float] | None:
    """(W, S, E, N) of everything the extract holds, None when it holds nothing."""
    frames = [extract.features, *(nodes for nodes, _ in extract.networks.values())]
    boxes = np.array([f.total_bounds for f in frames if len(f)])
    if not len(boxes):
        return None
    return (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())


_last_index: dict[tuple, tuple[EnvironmentIndex, tuple | None]] = {}


def _indexed(path: Path, box: tuple, projection: Projection, progress: bool):
    """The extract's index and data bounds for these points: the last one again when it serves them."""
    if not path.is_file():
        return _index(path, box, projection, progress)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, projection.crs.to_wkt(),
           None if read_whole(path) else box)
    if key not in _last_index:
        _last_index.clear()
        _last_index[key] = _index(path, box, projection, progress)
    return _last_index[key]


def _index(path: Path, box: tuple, projection: Projection, progress: bool):
    extract = read_osm_extract(path, box, progress=progress)
    return build_environment_index(extract, projection), data_bounds(extract)


def measure_places(lon: np.ndarray, lat: np.ndarray, osm_path: str | Path,
                   options: MeasureOptions = MeasureOptions()) -> MeasuredPlaces:
    """The variables of every point (WGS84) from the extract at ``osm_path``, one row per point; refuses
    points none of which lie inside the extract's data."""
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    projection = Projection(metric_crs(lon, lat, options.crs))
    started = time.perf_counter()
    index, bounds = _indexed(Path(osm_path), reading_box(lon, lat, max(options.buffer_sizes) + MARGIN_M),
                             projection, not options.quiet)
    load_seconds = time.perf_counter() - started
    covered = coverage(lon, lat, bounds, max(options.buffer_sizes), projection, str(osm_path))
    chunks = []
    with tqdm(total=len(lon), unit="point", desc="measuring", disable=options.quiet) as progress:
        for start in range(0, len(lon), options.chunk_size):
            stop = min(start + options.chunk_size, len(lon))
            chunks.append(environmental_variables(index, lon[start:stop], lat[start:stop], options.buffer_sizes))
            progress.update(stop - start)
    return MeasuredPlaces(pd.concat(chunks, ignore_index=True), projection.crs.name, load_seconds, covered)
