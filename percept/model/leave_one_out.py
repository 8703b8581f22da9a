"""Leave-one-out: score a survey image without any of its own samples.

A model records the survey image of each sample. A query that is itself a survey image would
find its own samples among its nearest neighbours; leaving them out gives the honest score of
an image the model has not seen. The search asks for K plus the most samples any one image
has in a category, then drops the query's own samples: what remains are exactly the K nearest
samples of the other images, in the same order (ties by training order).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from percept.model.knn import Neighbours


@dataclass(frozen=True)
class ImageKeys:
    """Survey images by key: per category, the key number of each sample (-1 where unrecorded)."""

    numbers: dict[str, int]  # image key -> key number
    samples: dict[str, np.ndarray]  # category -> (samples,) key number of each sample

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """The key number of each query key, -1 for images not in the survey."""
        return np.array([self.numbers.get(key, -1) for key in keys], dtype=np.int64)

    def widest(self, category: str) -> int:
        """The most samples any one image has in ``category``."""
        recorded = self.samples[category]
        recorded = recorded[recorded >= 0]
        return int(np.bincount(recorded).max()) if len(recorded) else 0


def image_keys(images: Mapping[str, Sequence[str]] | None, sample_counts: Mapping[str, int],
               key: Callable[[str], str] = str) -> ImageKeys:
    """Number the survey images of a model by ``key(name)`` (a category whose names are missing counts none)."""
    numbers: dict[str, int] = {}
    named: dict[str, int] = {}  # the key number of each name seen (categories repeat the survey's names)
    samples = {}
    for category, count in sample_counts.items():
        names = (images or {}).get(category)
        if names is None or len(names) != count:
            samples[category] = np.full(count, -1, dtype=np.int64)
            continue
        for name in dict.fromkeys(names):  # each new name once, in order of first appearance
            if name not in named:
                named[name] = numbers.setdefault(key(name), len(numbers))
        samples[category] = np.fromiter(map(named.__getitem__, names), dtype=np.int64, count=count)
    return ImageKeys(numbers, samples)


def leave_out(found: Neighbours, excluded: np.ndarray, k: int) -> tuple[Neighbours, np.ndarray]:
    """Per row, the first ``k`` neighbours not marked in ``excluded`` (shaped like ``found.index``), in order.

    Returns them (``k`` columns; index -1 and similarity NaN past a row's end) and each row's count.
    """
    keep = ~np.asarray(excluded, dtype=bool)
    rank = np.cumsum(keep, axis=1)
    take = keep & (rank <= k)
    counts = np.minimum(rank[:, -1] if rank.shape[1] else np.zeros(len(rank), np.int64), k)
    rows, columns = np.nonzero(take)
    slots = rank[rows, columns] - 1
    index = np.full((len(keep), k), -1, dtype=np.int64)
    similarity = np.full((len(keep), k), np.nan)
    index[rows, slots] = found.index[rows, columns]
    similarity[rows, slots] = found.similarity[rows, columns]
    return Neighbours(index, similarity), counts
