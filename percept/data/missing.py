"""Survey images a study could not use because they have no embedding (a failed download, say).

Nothing may vanish silently: per category, how many rated survey images and how many of their
ratings were dropped, out of how many. Ratings are counted from the ratings CSV when one is
given, else from the survey's ``count_<category>`` properties where it has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from percept.categories import CATEGORIES, CATEGORY_IDS
from percept.data.survey import Survey

if TYPE_CHECKING:
    import pandas as pd

#: The share of a category's rated images that may be missing before a study refuses to run.
MISSING_LIMIT = 0.05


@dataclass(frozen=True)
class Dropped:
    """One category's rated survey images and ratings, and how many of each were dropped."""

    images: int
    dropped_images: int
    ratings: int | None  # None: the survey does not say how many ratings it has
    dropped_ratings: int | None

    @property
    def share(self) -> float:
        return self.dropped_images / self.images if self.images else 0.0


@dataclass(frozen=True)
class MissingImages:
    """Per category, what was dropped for lack of an embedding; the first missing image's name."""

    by_category: dict[str, Dropped]
    first: str | None = None

    @property
    def any(self) -> bool:
        return any(d.dropped_images for d in self.by_category.values())

    def worst(self) -> tuple[str, Dropped]:
        """The category with the largest share of dropped images."""
        return max(self.by_category.items(), key=lambda item: item[1].share)

    def lines(self) -> list[str]:
        """One line per category that lost images."""
        out = []
        for category, dropped in self.by_category.items():
            if not dropped.dropped_images:
                continue
            ratings = "" if dropped.dropped_ratings is None else (
                f" and {dropped.dropped_ratings} of {dropped.ratings} ratings")
            out.append(f"{category}: dropped {dropped.dropped_images} of {dropped.images} rated survey images "
                       f"({dropped.share:.1%}){ratings} without an embedding")
        return out

    def as_dict(self) -> dict:
        return {c: {"images": d.images, "dropped_images": d.dropped_images, "ratings": d.ratings,
                    "dropped_ratings": d.dropped_ratings} for c, d in self.by_category.items()}


def missing_images(survey: Survey, matched: list[int | None], ratings: pd.DataFrame | None = None) -> MissingImages:
    """What each category loses from survey features that no embedding row matched.

    ``matched``: the survey feature of each embedding row (None for none); ``ratings``: the
    (filtered) ratings table with ``image_id`` and ``category_id``, when individual ratings are used.
    """
    embedded = np.zeros(len(survey.features), dtype=bool)
    embedded[[m for m in matched if m is not None]] = True
    features = np.fromiter(survey.by_name.values(), dtype=np.int64, count=len(survey.by_name))
    lost = features[~embedded[features]]
    first = None
    if len(lost):
        first = str(survey.features[int(lost[0])].get("url", "")).rsplit("/", 1)[-1]
    counts: dict[str, Dropped] = {}
    for category in CATEGORIES:
        key = f"average_{category}"
        rated = [f for f in features if survey.features[f].get(key) is not None]
        dropped = [f for f in rated if not embedded[f]]
        counts[category] = Dropped(len(rated), len(dropped), *_ratings(survey, category, rated, dropped, ratings))
    return MissingImages(counts, first)


def _ratings(survey: Survey, category: str, rated: list[int], dropped: list[int],
             ratings: pd.DataFrame | None) -> tuple[int | None, int | None]:
    """(ratings of the rated images, ratings of the dropped ones), or (None, None) when unknown."""
    if ratings is not None:
        frame = ratings[ratings["category_id"] == CATEGORY_IDS[category]]
        lost_ids = {survey.features[f].get("image_id") for f in dropped}
        return len(frame), int(frame["image_id"].isin(lost_ids).sum())
    key = f"count_{category}"
    values = [survey.features[f].get(key) for f in rated]
    counts = [v for v in values if type(v) is int]
    if not values or len(counts) < len(values):
        return None, None
    lost = {int(f) for f in dropped}
    return sum(counts), sum(v for f, v in zip(rated, counts) if int(f) in lost)
