"""The eight categories of points of interest and which OpenStreetMap tags put a feature in each.

A feature belongs to a category when any of its tags matches (``True``: any value of that key).
Its sub-type, for the entropy, is its first non-empty tag value among ``SUB_TYPE_KEYS``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

SUB_TYPE_KEYS = ("amenity", "shop", "leisure", "landuse", "natural", "public_transport")

CATEGORY_TAGS: dict[str, dict[str, frozenset[str] | Literal[True]]] = {
    "greenspace": {
        "leisure": frozenset({"garden", "fitness_station", "common", "dog_park", "greenfield", "grassland", "heath",
                              "nature_reserve", "park"}),
        "landuse": frozenset({"allotments", "recreation_ground", "grass", "forest", "greenfield", "village_green",
                              "meadow", "orchard"}),
        "natural": frozenset({"grassland", "wood", "scrub", "heath", "moor"}),
    },
    "shops": {"shop": True},
    "public_transport": {"public_transport": True},
    "sustenance": {
        "amenity": frozenset({"bar", "biergarten", "pub", "cafe", "fast_food", "food_court", "ice_cream",
                              "restaurant"}),
    },
    "education": {
        "amenity": frozenset({"college", "dancing_school", "driving_school", "first_aid_school", "kindergarten",
                              "language_school", "library", "surf_school", "toy_library", "research_institute",
                              "training", "music_school", "school", "traffic_park", "university"}),
    },
    "financial": {
        "amenity": frozenset({"bank", "atm", "payment_terminal", "bureau_de_change", "money_transfer",
                              "payment_centre"}),
    },
    "healthcare": {
        "amenity": frozenset({"baby_hatch", "clinic", "dentist", "doctors", "hospital", "nursing_home", "pharmacy",
                              "social_facility", "veterinary"}),
    },
    "entertainment": {
        "amenity": frozenset({"arts_centre", "casino", "cinema", "community_centre", "conference_centre",
                              "events_venue", "exhibition_centre", "fountain", "gambling", "music_venue", "nightclub",
                              "planetarium", "public_bookcase", "social_centre", "stage", "studio", "theatre"}),
        "leisure": frozenset({"amusement_arcade", "adult_gaming_centre", "bowling_alley", "bandstand",
                              "bathing_place", "beach_resort", "dance", "disc_golf_course", "escape_game", "fishing",
                              "golf_course", "horse_riding", "ice_rink", "miniature_golf", "picnic_table",
                              "playground", "resort", "sauna", "sports_centre", "sports_hall", "stadium",
                              "summer_camp", "swimming_area", "swimming_pool", "tanning_salon", "trampoline_park",
                              "water_park"}),
    },
}
CATEGORY_NAMES = tuple(CATEGORY_TAGS)


def tag_filter() -> dict[str, list[str] | bool]:
    """Every tag any category matches, merged per key: what to read from an extract."""
    merged: dict[str, set[str] | Literal[True]] = {}
    for tags in CATEGORY_TAGS.values():
        for key, values in tags.items():
            current = merged.get(key, set())
            if values is True or current is True:
                merged[key] = True
            else:
                merged[key] = current | values
    return {key: True if values is True else sorted(values) for key, values in merged.items()}


def category_membership(tags: pd.DataFrame) -> np.ndarray:
    """(features, categories) booleans: does each feature (a row of tag columns) belong to each category."""
    member = np.zeros((len(tags), len(CATEGORY_NAMES)), dtype=bool)
    for column, tag_map in enumerate(CATEGORY_TAGS.values()):
        for key, values in tag_map.items():
            if key not in tags.columns:
                continue
            present = tags[key].notna() & (tags[key].astype(str) != "")
            member[:, column] |= (present if values is True else tags[key].isin(values)).to_numpy()
    return member


def sub_types(tags: pd.DataFrame) -> np.ndarray:
    """Each feature's first non-empty tag value among ``SUB_TYPE_KEYS`` (None when it has none)."""
    chosen = pd.Series([None] * len(tags), index=tags.index, dtype=object)
    for key in reversed(SUB_TYPE_KEYS):
        if key in tags.columns:
            values = tags[key]
            present = values.notna() & (values.astype(str) != "")
            chosen = chosen.where(~present, values)
    return chosen.to_numpy(dtype=object)
