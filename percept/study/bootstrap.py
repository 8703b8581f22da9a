"""Cluster bootstrap: resample whole groups (images, spatial blocks) with replacement, seeded.

A resample draws as many groups as there are, uniformly with replacement, and is
represented by how often each group was drawn (its weight). Statistics are written
as functions of those weights over per-group sums, so no resampled copy of the data
is ever built. Resample ``b`` of seed ``s`` is row ``b`` of
``np.random.default_rng(s).integers(0, n_groups, size=(resamples, n_groups))``,
whatever chunks the work is done in. Intervals are percentile intervals
(``numpy.percentile``, linear interpolation) of the resampled statistic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from percept.errors import PerceptError

#: Resamples drawn by default.
DEFAULT_RESAMPLES = 2000
#: Coverage of the intervals.
DEFAULT_LEVEL = 0.95
#: Resample weights held at once (resamples x groups), which bounds the memory used (float64: 32 MB).
CHUNK_ENTRIES = 4_000_000


def resample_weights(n_groups: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks (resamples in chunk, n_groups) of how often each group was drawn in each resample."""
    if n_groups < 1:
        raise PerceptError("the bootstrap needs at least one group of samples to resample")
    if resamples < 1:
        raise PerceptError(f"the bootstrap needs at least one resample, got {resamples}")
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_ENTRIES // n_groups)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = rng.integers(0, n_groups, size=(size, n_groups))
        flat = (drawn + n_groups * np.arange(size)[:, None]).ravel()
        yield np.bincount(flat, minlength=size * n_groups).reshape(size, n_groups).astype(np.float64)


def bootstrap_intervals(statistic: Callable[[np.ndarray], np.ndarray], n_groups: int, seed: int,
                        resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL) -> np.ndarray:
    """(statistics, 2) percentile intervals of ``statistic`` over cluster resamples.

    ``statistic`` maps weights (resamples, n_groups) to values (resamples, statistics); at
    weights of one it must give the point estimate. Resamples where a statistic is NaN
    (undefined) are left out of its interval; NaN bounds when all are.
    """
    if not 0.0 < level < 1.0:
        raise PerceptError(f"the interval level must lie strictly between 0 and 1, got {level}")
    values = np.concatenate([np.asarray(statistic(w), dtype=np.float64).reshape(len(w), -1)
                             for w in resample_weights(n_groups, resamples, seed)])
    tail = 50.0 * (1.0 - level)
    bounds = np.full((values.shape[1], 2), np.nan)
    for column, resampled in enumerate(values.T):
        finite = resampled[np.isfinite(resampled)]
        if len(finite):
            bounds[column] = np.percentile(finite, [tail, 100.0 - tail])
    return bounds
