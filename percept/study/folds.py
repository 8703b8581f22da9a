"""Which samples must share a cross-validation fold, so that no test sample leaks into training.

- ``none``: every sample on its own (the drop-in tool's per-sample splits);
- ``image``: all samples of one image (its individual ratings with ``-d``);
- ``location``: all images taken at the same coordinates (e.g. the crops of one panorama);
- ``block:METRES``: all images in one square block of that size, laid out in the
  UTM zone of the survey (spatial block cross-validation: neighbouring, spatially
  autocorrelated images never sit on both sides of a split).

:func:`sample_groups` gives each sample a group number; whole groups are dealt to folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import Transformer

from percept.errors import PerceptError
from percept.study.hexgrid import WGS84, utm_crs

KINDS = ("none", "image", "location", "block")
#: Coordinates equal to this many decimals of a degree (about 1 cm) are one location.
LOCATION_DECIMALS = 7

DESCRIPTIONS = {
    "none": "folds over individual samples (no grouping)",
    "image": "folds grouped by image: all samples of an image in one fold",
    "location": "folds grouped by location: all images at the same coordinates in one fold",
    "block": "folds grouped by spatial block: all images in one {metres:g} m square block in one fold",
}


@dataclass(frozen=True)
class GroupBy:
    """How samples are grouped into folds: ``kind`` one of ``KINDS``; ``metres`` for blocks."""

    kind: str = "none"
    metres: float | None = None

    @property
    def label(self) -> str:
        return f"block:{self.metres:g}" if self.kind == "block" else self.kind

    def describe(self) -> str:
        """One sentence for printouts and reports."""
        return DESCRIPTIONS[self.kind].format(metres=self.metres or 0)


def parse_group_by(text: str) -> GroupBy:
    """``none``, ``image``, ``location`` or ``block:METRES`` (e.g. ``block:500``)."""
    kind, colon, size = str(text).strip().partition(":")
    if kind not in KINDS or (kind == "block") != bool(colon):
        raise PerceptError(f"--group-by takes none, image, location or block:METRES (e.g. block:500), got {text!r}")
    if kind != "block":
        return GroupBy(kind)
    try:
        metres = float(size)
    except ValueError:
        metres = float("nan")
    if not np.isfinite(metres) or metres <= 0:
        raise PerceptError(f"--group-by block:METRES needs a positive block size in metres, got {text!r}")
    return GroupBy("block", metres)


def default_group_by(individual_ratings: bool) -> GroupBy:
    """``image`` when samples are individual ratings (one image rated many times), else ``none``."""
    return GroupBy("image" if individual_ratings else "none")


def sample_groups(group_by: GroupBy, rows: np.ndarray, lonlat: np.ndarray | None = None) -> np.ndarray | None:
    """Group number (0..groups-1) of each sample, or None when every sample is its own group.

    ``rows`` are the samples' vector rows; ``lonlat`` (vector rows, 2) their images' WGS84
    coordinates, needed for ``location`` and ``block``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if group_by.kind == "none":
        return None
    if group_by.kind == "image":
        return np.unique(rows, return_inverse=True)[1].ravel()
    points = _sample_points(group_by, rows, lonlat)
    if group_by.kind == "location":
        keys = np.round(points, LOCATION_DECIMALS)
    else:
        keys = block_keys(points, group_by.metres)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def block_keys(lonlat: np.ndarray, metres: float) -> np.ndarray:
    """(n, 2) integer block of each WGS84 point: squares of ``metres`` in the UTM zone of their centre."""
    lon, lat = lonlat[:, 0], lonlat[:, 1]
    crs = utm_crs(float(np.mean(lon)), float(np.mean(lat)))
    x, y = Transformer.from_crs(WGS84, crs, always_xy=True).transform(lon, lat)
    return np.stack([np.floor(np.asarray(x) / metres), np.floor(np.asarray(y) / metres)], axis=1).astype(np.int64)


def _sample_points(group_by: GroupBy, rows: np.ndarray, lonlat: np.ndarray | None) -> np.ndarray:
    """The WGS84 point of each sample, checked to be present and in range."""
    flag = f"--group-by {group_by.label}"
    if lonlat is None:
        raise PerceptError(f"{flag} needs each image's coordinates, but none were loaded")
    points = np.asarray(lonlat, dtype=np.float64)[rows]
    missing = ~np.isfinite(points).all(axis=1)
    if missing.any():
        raise PerceptError(f"{flag} needs each image's coordinates: {int(missing.sum())} samples' survey features "
                           "have no Point geometry; give every feature a Point or use --group-by image")
    bad = (np.abs(points[:, 0]) > 180) | (np.abs(points[:, 1]) > 90)
    if bad.any():
        lon, lat = points[np.argmax(bad)]
        raise PerceptError(f"{flag}: survey point ({lon:g}, {lat:g}) is not a WGS84 longitude/latitude; "
                           "export the survey GeoJSON in EPSG:4326")
    return points
