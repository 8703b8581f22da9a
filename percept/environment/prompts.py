"""Environmental features as text: prompts describing each image's surroundings.

A prompt lists a feature's environmental properties in their GeoJSON order as
``<key text> is <value>`` joined by ``; ``. Style 0 writes the value as Python's
``str()`` of the JSON value; style 1 writes its quintile word, computed once per key
over all features, or against a survey's quintile reference (:func:`quintile_reference`,
recorded in environmental models) so that new places are ranked as the survey was.

Null and non-finite (NaN, infinite) values count as missing: the prompt omits them,
they take no part in the quintiles, and the feature is counted as incomplete.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from percept.data.survey import image_name
from percept.environment.keys import ENV_KEYS
from percept.errors import PerceptError

PROMPT_STYLES = (0, 1)
DEFAULT_PROMPT_STYLE = 0
QUINTILE_WORDS = ("very low", "low", "medium", "high", "very high")
SPECIAL_NAMES = {
    "streets per node proportions1": "number of cul-de-sacs",
    "streets per node proportions3": "number of 3-way intersections",
    "streets per node proportions4": "number of 4-way intersections",
    "num nodes": "number of intersections",
    "num edges": "number of street segments",
}
KEY_INDEX = {key: i for i, key in enumerate(ENV_KEYS)}


def key_text(key: str) -> str:
    """``shops_count_100`` → ``shops count (within buffer of size 100m)``."""
    *words, size = key.split("_")
    name = " ".join(words)
    return f"{SPECIAL_NAMES.get(name, name)} (within buffer of size {size}m)"


KEY_TEXTS = tuple(key_text(key) for key in ENV_KEYS)


#: Per environmental key, the thresholds style 1 bins its values by: ``{"edges": [q1, q2, q3, q4]}``, or
#: ``{"distinct": [...]}`` (each distinct value its own bin) when a key had fewer than five distinct values.
QuintileReference = dict[str, dict[str, list[float]]]
#: How many thresholds each kind of entry holds.
REFERENCE_SIZES = {"edges": (4,), "distinct": (1, 2, 3, 4)}


@dataclass(frozen=True)
class PromptSet:
    """One prompt per feature (in feature order), how many features lacked some keys, and (style 1 with a
    survey's reference) the keys the prompts omit because the reference has no thresholds for them."""

    prompts: list[str]
    style: int
    keys: tuple[str, ...]
    incomplete: int
    unranked: tuple[str, ...] = ()

    def warning(self) -> str | None:
        """A one-line warning when some features lack environmental keys, else None."""
        if not self.incomplete:
            return None
        return (f"{self.incomplete} of {len(self.prompts)} survey features lack some of the "
                f"{len(self.keys)} environmental keys (or hold null): their prompts omit them")


@dataclass
class _Table:
    """Every feature's environmental values, flattened in feature and property order."""

    starts: np.ndarray      # offset of each feature's first entry; one extra at the end
    key_ids: np.ndarray     # index into ENV_KEYS of each entry
    raw: list               # each entry's JSON value, as given
    values: np.ndarray      # each entry's value as float64
    incomplete: int


def build_prompts(features: list[dict], style: int, reference: QuintileReference | None = None) -> PromptSet:
    """The prompt of every feature (its properties dict) in the given style (0: values, 1: quintiles).

    Style 1 bins each value against ``reference`` (a survey's, from :func:`quintile_reference`) when
    given, leaving out keys it has no thresholds for; otherwise against these features' own quintiles.
    """
    if style not in PROMPT_STYLES:
        raise PerceptError(f"prompt style must be one of {', '.join(map(str, PROMPT_STYLES))}, got {style!r}")
    table = _collect(features)
    keys = tuple(ENV_KEYS[k] for k in np.unique(table.key_ids))
    unranked: tuple[str, ...] = ()
    phrases: list[str | None]
    if style == 0:
        phrases = [f"{KEY_TEXTS[k]} is {v}" for k, v in zip(table.key_ids.tolist(), table.raw)]
    else:
        reference = _table_reference(table) if reference is None else reference
        phrases = _quintile_phrases(table, _thresholds(reference))
        unranked = tuple(key for key in keys if key not in reference)
    bounds = table.starts.tolist()
    prompts = ["; ".join(p for p in phrases[a:b] if p is not None) for a, b in pairwise(bounds)]
    return PromptSet(prompts, style, keys, table.incomplete, unranked)


def quintile_reference(features: list[dict]) -> QuintileReference:
    """Per key, the thresholds style 1 bins these features' values by (what :func:`quintile_bins` uses)."""
    return _table_reference(_collect(features))


def _collect(features: list[dict]) -> _Table:
    """Gather the environmental entries of every feature, checking that each is a number."""
    starts, key_ids, raw, found_counts = [0], [], [], []
    for number, props in enumerate(features):
        found = 0
        for key, value in props.items():
            key_id = KEY_INDEX.get(key)
            if key_id is None:
                continue
            if not _usable(value, key, number, props):
                continue
            key_ids.append(key_id)
            raw.append(value)
            found += 1
        starts.append(len(raw))
        found_counts.append(found)
    if not raw:
        raise PerceptError(f"no survey feature has any of the {len(ENV_KEYS)} environmental keys "
                           f"(such as {ENV_KEYS[0]}): environmental prompts need a survey GeoJSON "
                           "exported with its environmental variables")
    ids = np.asarray(key_ids, dtype=np.int64)
    present = np.unique(ids).size
    incomplete = sum(found < present for found in found_counts)
    return _Table(np.asarray(starts, dtype=np.int64), ids, raw, np.asarray(raw, dtype=np.float64), incomplete)


def _usable(value, key: str, number: int, props: dict) -> bool:
    """True for a finite number; False for null/NaN/infinite (missing); PerceptError otherwise."""
    kind = type(value)
    if kind is int:
        return True
    if kind is float:
        return value - value == 0
    if value is None:
        return False
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return bool(np.isfinite(float(value)))
    name = image_name(props.get("url", "")) or "no url"
    raise PerceptError(f"survey feature {number} ({name}): environmental key {key!r} holds "
                       f"{value!r} ({kind.__name__}), not a number: fix the survey GeoJSON so that "
                       "every environmental value is a number or null")


def _table_reference(table: _Table) -> QuintileReference:
    """The thresholds of every key present in the table, over its values."""
    return {ENV_KEYS[key_id]: key_reference(table.values[table.key_ids == key_id])
            for key_id in np.unique(table.key_ids).tolist()}


def _thresholds(reference: QuintileReference) -> dict[int, np.ndarray]:
    """The reference's thresholds by key index."""
    found = {}
    for key, entry in reference.items():
        found[KEY_INDEX[key]] = _key_thresholds(key, entry)  # checked before the key is looked up
    return found


def _key_thresholds(key: str, entry) -> np.ndarray:
    """One key's thresholds as float64, refusing a damaged entry (the reference is read from a model file)."""
    kind, values = next(iter(entry.items())) if isinstance(entry, dict) and len(entry) == 1 else (None, None)
    if key in KEY_INDEX and kind in REFERENCE_SIZES and isinstance(values, list) \
            and len(values) in REFERENCE_SIZES[kind] and all(type(v) in (int, float) for v in values):
        thresholds = np.asarray(values, dtype=np.float64)
        if np.isfinite(thresholds).all() and np.all(np.diff(thresholds) >= 0):
            return thresholds
    raise PerceptError(f"the survey's quintile reference for {key!r} is damaged ({entry!r}): re-export the model")


def _quintile_phrases(table: _Table, thresholds: dict[int, np.ndarray]) -> list[str | None]:
    """``<key text> is <quintile word>`` for every entry (None for keys without thresholds)."""
    bins = np.full(len(table.values), -1, dtype=np.int64)
    for key_id in np.unique(table.key_ids).tolist():
        if key_id in thresholds:
            rows = np.flatnonzero(table.key_ids == key_id)
            bins[rows] = reference_bins(thresholds[key_id], table.values[rows])
    choices = np.array([f"{text} is {word}" for text in KEY_TEXTS for word in QUINTILE_WORDS], dtype=object)
    phrases = choices[table.key_ids * len(QUINTILE_WORDS) + np.maximum(bins, 0)]
    phrases[bins < 0] = None
    return phrases.tolist()


def key_reference(values: np.ndarray) -> dict[str, list[float]]:
    """One key's thresholds over ``values``: the quintile edges of its distinct values, or the distinct
    values themselves when there are fewer than five."""
    distinct = np.unique(np.asarray(values, dtype=np.float64))
    if distinct.size < len(QUINTILE_WORDS):
        return {"distinct": distinct.tolist()}
    return {"edges": np.quantile(distinct, [0.2, 0.4, 0.6, 0.8]).tolist()}


def reference_bins(thresholds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin 0..4 of each value against one key's thresholds: the number of thresholds below it
    (right-closed bins; a value above every distinct value ranks one higher than the highest)."""
    return np.searchsorted(thresholds, np.asarray(values, dtype=np.float64), side="left")


def quintile_bins(values: np.ndarray) -> np.ndarray:
    """Bin 0..4 (very low..very high) of each value among one key's values.

    With at least 5 distinct values U: edges ``[-1, q1..q4, max(U)+1]`` with
    q = numpy.quantile(U, [.2, .4, .6, .8]), right-closed, lowest included (pandas.cut),
    except that values below -1 fall in the lowest bin. With fewer distinct values,
    each distinct value is its own bin, counted from the lowest.
    """
    (thresholds,) = key_reference(values).values()
    return reference_bins(np.asarray(thresholds), values)
