"""Load a Percept survey GeoJSON and collect each category's samples from its averages.

Individual ratings (the demographics CSV) live in :mod:`percept.data.ratings`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

import numpy as np
from numpy.typing import ArrayLike

from percept.categories import CATEGORIES, SCORE_RANGE
from percept.errors import PerceptError
from percept.memory import release_free_memory

if TYPE_CHECKING:
    import mmap

    import msgspec

    class _KeptProperties(msgspec.Struct):
        """A feature's kept properties (the class is built at run time, for the properties kept)."""

        url: object

#: The properties the KNN needs from each feature (environmental keys aside).
CORE_PROPERTIES = frozenset({"image_id", "url", *(f"average_{c}" for c in CATEGORIES),
                             *(f"count_{c}" for c in CATEGORIES)})


def image_name(path_or_url: str) -> str:
    """The part after the last ``/``: how embedding rows and survey features are matched."""
    return image_names((path_or_url,))[0]


def image_names(paths_or_urls: Iterable) -> list[str]:
    """:func:`image_name` of each (one loop, no call per name: a survey holds tens of thousands)."""
    return [str(path).replace("\\", "/").rpartition("/")[2] for path in paths_or_urls]


@dataclass
class Survey:
    """The survey's features (their properties, in file order) and a look-up by image name."""

    features: list[dict]
    by_name: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    source: str = "survey"  # the file, for messages
    lonlat: np.ndarray | None = None  # (features, 2) Point coordinates; NaN where a feature has none

    def feature_for(self, name: str) -> dict | None:
        index = self.by_name.get(image_name(name))
        return None if index is None else self.features[index]


def parse_survey(data: object, source: str = "survey", keep: frozenset[str] | None = None) -> Survey:
    """Validate a decoded GeoJSON FeatureCollection and index its features by image name.

    With ``keep``, each feature keeps only those properties, which saves memory on
    large surveys (their order is then not kept).
    """
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise PerceptError(f"{source} is not a GeoJSON FeatureCollection: give the survey's data.geojson export")
    features = data.get("features")
    if not isinstance(features, list):
        raise PerceptError(f"{source} has no 'features' list: give the survey's data.geojson export")
    properties = [feature.get("properties") if isinstance(feature, dict) else None for feature in features]
    urls = [props.get("url") if isinstance(props, dict) else None for props in properties]
    by_name, lonlat = _index(urls, [feature.get("geometry") if isinstance(feature, dict) else None
                                    for feature in features], source)
    # every feature has its properties now: _index refused the first without a 'url' among them
    records = [props for props in properties if isinstance(props, dict)]
    if keep is not None:
        records = [{k: props[k] for k in keep if k in props} for props in records]
    return Survey(records, by_name, len(features) - len(by_name), source, lonlat)


def _index(urls: list, geometries: list, source: str) -> tuple[dict[str, int], np.ndarray]:
    """Each image name's feature (a repeated name: the last feature holds it) and each feature's Point,
    refusing the first feature whose 'url' is missing, empty or not text."""
    bad = next((number for number, url in enumerate(urls) if not url or type(url) is not str), None)
    if bad is not None:
        raise _bad_url(source, bad, urls[bad])
    by_name = dict(zip(image_names(urls), range(len(urls))))
    lonlat = np.array([point_coordinates(geometry) for geometry in geometries], dtype=np.float64)
    return by_name, lonlat.reshape(-1, 2)


def _bad_url(source: str, number: int, url: object) -> PerceptError:
    """The error for feature ``number``, whose 'url' property is missing, empty or not text."""
    if not url:
        return PerceptError(f"{source}: feature {number} has no 'url' property naming its image; "
                            "every survey feature needs one")
    return PerceptError(f"{source}: feature {number} holds 'url' {url!r}, not a string: "
                        "the url must be the image's URL as text")


_NUMBERS = (int, float)


def point_coordinates(geometry: object) -> tuple[float, float]:
    """``(lon, lat)`` of a GeoJSON Point geometry; NaN for anything else."""
    if type(geometry) is dict and geometry.get("type") == "Point":
        coords = geometry.get("coordinates")
        if type(coords) is list and len(coords) >= 2 and type(coords[0]) in _NUMBERS and type(coords[1]) in _NUMBERS:
            return float(coords[0]), float(coords[1])
    return np.nan, np.nan


def load_survey(path: str | Path, keep: frozenset[str] | None = None) -> Survey:
    """Read and validate the survey GeoJSON file (``keep``: see :func:`parse_survey`)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            survey = _read(handle, str(path), keep)
    except FileNotFoundError:
        raise PerceptError(f"survey GeoJSON {path} does not exist: check the -g/--geojson path") from None
    except OSError as exc:
        raise PerceptError(f"cannot read survey GeoJSON {path}: {exc}") from None
    release_free_memory()
    return survey


def _read(handle: BinaryIO, source: str, keep: frozenset[str] | None) -> Survey:
    """Decode an open survey file, mapped into memory rather than copied."""
    import mmap

    with (mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(handle.fileno()).st_size
          else contextlib.nullcontext(b"")) as raw:
        features = _decode_kept(raw, keep) if keep is not None else None
        if features is not None:
            return _survey_from_kept(features, source)
        import orjson

        try:
            with memoryview(raw) as view:
                data = orjson.loads(view)
        except orjson.JSONDecodeError as exc:
            raise PerceptError(f"survey GeoJSON {source} is not valid JSON ({exc}): "
                               "fix or re-export the file") from None
    return parse_survey(data, source, keep)


def _decode_kept(raw: bytes | mmap.mmap, keep: frozenset[str]) -> list[_KeptFeature] | None:
    """The FeatureCollection's features with only the properties in ``keep`` decoded (others are skipped
    unread; one that is absent reads as null). None when the file is not shaped as a survey expects: the full
    decoder then reports what is wrong."""
    import msgspec

    try:
        collection = _kept_decoder(keep).decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if collection.type != "FeatureCollection":
        return None
    return collection.features


def _survey_from_kept(features: list[_KeptFeature], source: str) -> Survey:
    """:func:`parse_survey` for the features from :func:`_decode_kept` (same checks, no per-feature dicts walk)."""
    import msgspec

    properties = [feature.properties for feature in features]
    by_name, lonlat = _index([None if props is None else props.url for props in properties],
                             [feature.geometry for feature in features], source)
    # every feature has its properties now: _index refused the first without a 'url' among them
    records = [msgspec.structs.asdict(props) for props in properties if props is not None]
    return Survey(records, by_name, len(features) - len(by_name), source, lonlat)


class _KeptFeature(Protocol):
    properties: _KeptProperties | None
    geometry: object


class _KeptCollection(Protocol):
    """What :func:`_kept_decoder` decodes (its classes are built at run time, for the properties kept)."""

    type: object
    features: list[_KeptFeature] | None


@functools.cache
def _kept_decoder(keep: frozenset[str]) -> msgspec.json.Decoder[_KeptCollection]:
    import msgspec

    properties = msgspec.defstruct("Properties", [(name, Any, None) for name in sorted(keep)])
    feature = msgspec.defstruct("Feature", [("properties", properties | None, None), ("geometry", Any, None)])
    features = types.GenericAlias(list, (feature,))  # list[feature], for a class made at run time
    collection = msgspec.defstruct("Collection", [("type", Any, None), ("features", features | None, None)])
    return msgspec.json.Decoder(cast("type[_KeptCollection]", collection))


@dataclass(frozen=True)
class Samples:
    """One category's samples: the embedding row of each and its score."""

    rows: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class SampleSet:
    """Samples of every category, plus the embedding rows that matched no survey feature."""

    by_category: dict[str, Samples]
    unmatched: list[str]
    unrated: int = 0
    rating_rows: dict | None = None  # per category, the rating rows (a DataFrame) behind its samples


def match_features(names: list[str], survey: Survey) -> tuple[list[int | None], list[str]]:
    """For each embedding row, its survey feature index (or None), and the unmatched names."""
    by_name = survey.by_name
    matched = [by_name.get(name) for name in image_names(names)]
    unmatched = [n for n, m in zip(names, matched) if m is None]
    return matched, unmatched


def average_samples(names: list[str], survey: Survey,
                    matches: tuple[list[int | None], list[str]] | None = None) -> SampleSet:
    """One sample per image and category whose ``average_<category>`` is present and not null.

    Each average must be a JSON number from 1 to 5 (or null); anything else is refused.
    ``matches``: :func:`match_features` of ``names``, when already computed.
    """
    matched, unmatched = matches or match_features(names, survey)
    rows: dict[str, list[int]] = {c: [] for c in CATEGORIES}
    scores: dict[str, list[float]] = {c: [] for c in CATEGORIES}
    keys = [(c, f"average_{c}") for c in CATEGORIES]
    low, high = SCORE_RANGE
    for row, feature in enumerate(matched):
        if feature is None:
            continue
        props = survey.features[feature]
        for category, key in keys:
            value = props.get(key)
            if value is not None:
                if (type(value) is not float and type(value) is not int) or not low <= value <= high:
                    raise _bad_average(survey, feature, category, value)
                rows[category].append(row)
                scores[category].append(float(value))
    return SampleSet({c: to_samples(rows[c], scores[c]) for c in CATEGORIES}, unmatched)


def _bad_average(survey: Survey, feature: int, category: str, value: object) -> PerceptError:
    name = image_name(survey.features[feature]["url"])
    return PerceptError(f"{survey.source}: feature {feature} ({name}) holds 'average_{category}' {value!r} "
                        f"({type(value).__name__}): an average must be a number from 1 to 5 or null, "
                        "so fix the survey GeoJSON")


def to_samples(rows: ArrayLike, scores: ArrayLike) -> Samples:
    """Samples from row indices and scores (int64 and float64 arrays)."""
    return Samples(np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float64))
