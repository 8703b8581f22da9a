"""Map markers for rated images: the crops of one panorama at one place share one marker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from percept.data.locations import PANORAMA_CROP


@dataclass(frozen=True)
class Markers:
    """One marker per place: its key (panorama id, or the image name when alone) and position; the rated
    rows of marker ``m`` are ``order[bounds[m]:bounds[m + 1]]``."""

    keys: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    order: np.ndarray
    bounds: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, marker: int) -> np.ndarray:
        return self.order[self.bounds[marker]:self.bounds[marker + 1]]


def panorama_ids(names: np.ndarray) -> dict[int, str]:
    """``{row: panorama id}`` for the names that are crops ``<id>_x<n>.<ext>`` (as ``percept rate`` reads them)."""
    found = {}
    for row in np.flatnonzero(np.char.find(names, "_x") >= 0):
        match = PANORAMA_CROP.match(str(names[row]).replace("\\", "/").rsplit("/", 1)[-1])
        if match:
            found[int(row)] = match.group("id")
    return found


def group_markers(names, lon: np.ndarray, lat: np.ndarray) -> Markers:
    """Group rated rows that are crops of one panorama at the same position; every other row is a marker
    of its own. Markers come in the order of their first row."""
    names = np.asarray(names, dtype=str)
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    panoramas = panorama_ids(names)
    first_row = np.arange(len(names))  # each row's marker, named by the marker's first row
    if panoramas:
        crop_rows = np.fromiter(panoramas, dtype=np.int64, count=len(panoramas))
        places = pd.DataFrame({"key": list(panoramas.values()), "lon": lon[crop_rows], "lat": lat[crop_rows]})
        group = places.groupby(["key", "lon", "lat"], sort=False).ngroup().to_numpy()
        _, first_in_group = np.unique(group, return_index=True)
        first_row[crop_rows] = crop_rows[first_in_group][group]
    order = np.argsort(first_row, kind="stable")
    starts = np.flatnonzero(np.diff(first_row[order])) + 1
    first = order[np.concatenate([[0], starts]).astype(np.int64)] if len(names) else order
    bounds = np.append(np.concatenate([[0], starts]), len(names)).astype(np.int64) if len(names) \
        else np.zeros(1, np.int64)
    keys = names[first].astype(object)
    for marker in np.flatnonzero(np.diff(bounds) > 1):
        keys[marker] = panoramas[int(first[marker])]
    return Markers(keys, lon[first], lat[first], order, bounds)


def thin_evenly(indices: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``indices``, spread evenly over them."""
    if len(indices) <= limit:
        return indices
    return indices[np.linspace(0, len(indices) - 1, limit).astype(np.int64)]
