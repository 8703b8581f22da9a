"""Map markers for rated images: the crops of one panorama at one place share one marker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from percept.city.rating import panorama_id


@dataclass(frozen=True)
class Markers:
    """One marker per place: its key (panorama id, or the image name when alone), position and rated rows."""

    keys: list[str]
    lon: np.ndarray
    lat: np.ndarray
    rows: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.keys)


def group_markers(names, lon: np.ndarray, lat: np.ndarray) -> Markers:
    """Group rated rows that are crops of one panorama (``<id>_x<n>.<ext>``) at the same position."""
    groups: dict[tuple[str, float, float], list[int]] = {}
    for row, (name, x, y) in enumerate(zip(names, lon, lat)):
        groups.setdefault((panorama_id(str(name)), float(x), float(y)), []).append(row)
    keys, rows = [], []
    for (key, _, _), members in groups.items():
        keys.append(key if len(members) > 1 else str(names[members[0]]))
        rows.append(np.asarray(members, dtype=np.int64))
    first = np.asarray([members[0] for members in rows], dtype=np.int64)
    return Markers(keys, np.asarray(lon, dtype=np.float64)[first], np.asarray(lat, dtype=np.float64)[first], rows)


def thin_evenly(indices: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``indices``, spread evenly over them."""
    if len(indices) <= limit:
        return indices
    return indices[np.linspace(0, len(indices) - 1, limit).astype(np.int64)]
