"""What a map says about each cell: how many images, the mean of the mapped value, its spread within
the cell, the mean interval width and the share of images outside the survey's domain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CellStats:
    """Per cell: image count, mean and spread (population sd) of the mapped value; mean interval width
    over the images that have one (NaN where none has) and out-of-domain share (0-1); None when unknown."""

    count: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    mean_width: np.ndarray | None = None
    out_of_domain_share: np.ndarray | None = None


def cell_stats(cell_of_point: np.ndarray, cells: int, values: np.ndarray, width: np.ndarray | None = None,
               out_of_domain: np.ndarray | None = None) -> CellStats:
    """Summarise the points of each of ``cells`` cells (``cell_of_point`` gives each point's cell)."""
    cell_of_point = np.asarray(cell_of_point, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    count = np.bincount(cell_of_point, minlength=cells)
    mean = np.bincount(cell_of_point, weights=values, minlength=cells) / count
    squares = np.bincount(cell_of_point, weights=(values - mean[cell_of_point]) ** 2, minlength=cells)
    spread = np.sqrt(squares / count)
    return CellStats(count, mean, spread, _nan_mean(cell_of_point, cells, width),
                     None if out_of_domain is None else
                     np.bincount(cell_of_point, weights=np.asarray(out_of_domain, dtype=np.float64),
                                 minlength=cells) / count)


def _nan_mean(cell_of_point: np.ndarray, cells: int, values: np.ndarray | None) -> np.ndarray | None:
    """Mean per cell over the finite values (NaN for a cell without one)."""
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    known = np.isfinite(values)
    sums = np.bincount(cell_of_point[known], weights=values[known], minlength=cells)
    counts = np.bincount(cell_of_point[known], minlength=cells)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
