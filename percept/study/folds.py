"""Which samples must share a cross-validation fold, so that no test sample leaks into training.

- ``none``: every sample on its own (the drop-in tool's per-sample splits);
- ``image``: all samples of one image (its individual ratings with ``-d``);
- ``location``: all images taken at the same coordinates (e.g. the crops of one panorama);
- ``block:METRES``: all images in one square block of that size, laid out in the
  UTM zone of the survey (spatial block cross-validation: neighbouring, spatially
  autocorrelated images never sit on both sides of a split);
- ``column:NAME``: all images whose survey feature holds the same value of property NAME
  (e.g. the city or district), so a model is tested on places it never saw.

:func:`sample_groups` gives each sample a group number; whole groups are dealt to folds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
from pyproj import Transformer

from percept.data.crs import WGS84, utm_crs
from percept.errors import PerceptError

KINDS = ("none", "image", "location", "block", "column")
#: Coordinates equal to this many decimals of a degree (about 1 cm) are one location.
LOCATION_DECIMALS = 7

DESCRIPTIONS = {
    "none": "folds over individual samples (no grouping)",
    "image": "folds grouped by image: all samples of an image in one fold",
    "location": "folds grouped by location: all images at the same coordinates in one fold",
    "block": "folds grouped by spatial block: all images in one {metres:g} m square block in one fold",
    "column": "folds grouped by survey property {column!r}: all images with the same value in one fold",
}
USAGE = "--group-by takes none, image, location, block:METRES (e.g. block:500) or column:NAME (e.g. column:city)"


@dataclass(frozen=True)
class GroupBy:
    """How samples are grouped into folds: ``kind`` one of ``KINDS``; ``metres`` for blocks; ``column`` (the
    survey property) for ``column``, whose per-image ``values`` (vector rows) :meth:`with_values` attaches."""

    kind: str = "none"
    metres: float | None = None
    column: str | None = None
    values: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        if self.kind == "block":
            return f"block:{self.metres:g}"
        return f"column:{self.column}" if self.kind == "column" else self.kind

    def describe(self) -> str:
        """One sentence for printouts and reports."""
        return DESCRIPTIONS[self.kind].format(metres=self.metres or 0, column=self.column)

    def with_values(self, values) -> GroupBy:
        """This grouping with the value of its survey property for each vector row (None where missing)."""
        column = np.empty(len(values), dtype=object)
        for row, value in enumerate(values):  # one by one: a value may itself be a JSON list
            column[row] = value
        return replace(self, values=column)


def parse_group_by(text: str) -> GroupBy:
    """``none``, ``image``, ``location``, ``block:METRES`` (e.g. ``block:500``) or ``column:NAME``."""
    kind, colon, size = str(text).strip().partition(":")
    if kind not in KINDS or (kind in ("block", "column")) != bool(colon):
        raise PerceptError(f"{USAGE}, got {text!r}")
    if kind == "column":
        if not size.strip():
            raise PerceptError(f"--group-by column:NAME needs the name of a survey feature property, got {text!r}")
        return GroupBy("column", column=size.strip())
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
    coordinates, needed for ``location`` and ``block``; ``column`` groups by ``group_by.values``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if group_by.kind == "none":
        return None
    if group_by.kind == "image":
        return np.unique(rows, return_inverse=True)[1].ravel()
    if group_by.kind == "column":
        return np.unique(_sample_values(group_by, rows), return_inverse=True)[1].ravel()
    points = _sample_points(group_by, rows, lonlat)
    if group_by.kind == "location":
        keys = np.round(points, LOCATION_DECIMALS)
    elif group_by.metres is not None:
        keys = block_keys(points, group_by.metres)
    else:
        raise ValueError("grouping by block needs the blocks' size in metres")
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def block_keys(lonlat: np.ndarray, metres: float) -> np.ndarray:
    """(n, 2) integer block of each WGS84 point: squares of ``metres`` in the UTM zone of their centre."""
    lon, lat = lonlat[:, 0], lonlat[:, 1]
    crs = utm_crs(float(np.mean(lon)), float(np.mean(lat)))
    x, y = Transformer.from_crs(WGS84, crs, always_xy=True).transform(lon, lat)
    return np.stack([np.floor(np.asarray(x) / metres), np.floor(np.asarray(y) / metres)], axis=1).astype(np.int64)


def value_key(value) -> str | None:
    """A property value as a group key: text as is, other JSON values as JSON; None when missing or empty."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _sample_values(group_by: GroupBy, rows: np.ndarray) -> np.ndarray:
    """The group key of each sample from its image's property value, refusing images that lack one."""
    flag = f"--group-by {group_by.label}"
    if group_by.values is None:
        raise PerceptError(f"{flag} needs each image's survey property {group_by.column!r}, but none were loaded")
    keys = np.array([value_key(v) for v in group_by.values], dtype=object)
    lacking = np.unique(rows[np.array([k is None for k in keys[rows]], dtype=bool)])
    if len(lacking):
        raise PerceptError(f"{flag}: {len(lacking)} of {len(np.unique(rows))} rated images' survey features lack "
                           f"the property {group_by.column!r} (absent, null or empty); give every feature a value "
                           "or group otherwise")
    return keys[rows].astype(str)


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
