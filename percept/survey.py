"""Load a Percept survey (GeoJSON + demographics CSV), filter ratings, and collect samples."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from percept.categories import CATEGORIES, CATEGORY_BY_ID
from percept.errors import PerceptError
from percept.memory import release_free_memory

INTEGER_COLUMNS = ("image_id", "category_id", "rating_id", "session_id", "rating", "score", "age")
REQUIRED_RATING_COLUMNS = ("image_id", "category_id", "rating")
NL_COUNTRY = re.compile(r"^NL$|Nederland|Netherlands|Dutch|Utrecht|Amsterdam|netherland|netjerlands|Netherl")
NL_POSTCODE = re.compile(r"^[0-9]{4} *[A-Z]{2}$")
REGIONS = ("NL", "non-NL")
#: The properties the KNN needs from each feature (environmental keys aside).
CORE_PROPERTIES = frozenset({"image_id", "url", *(f"average_{c}" for c in CATEGORIES)})
MAX_AGE = 120


def image_name(path_or_url: str) -> str:
    """The part after the last ``/``: how embedding rows and survey features are matched."""
    return str(path_or_url).replace("\\", "/").rsplit("/", 1)[-1]


@dataclass
class Survey:
    """The survey's features (their properties, in file order) and a look-up by image name."""

    features: list[dict]
    by_name: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0

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
    properties, by_name, duplicates = [], {}, 0
    for number, feature in enumerate(features):
        props = feature.get("properties") if isinstance(feature, dict) else None
        if not isinstance(props, dict) or not props.get("url"):
            raise PerceptError(f"{source}: feature {number} has no 'url' property naming its image; "
                               "every survey feature needs one")
        name = image_name(props["url"])
        duplicates += name in by_name
        by_name[name] = len(properties)
        properties.append(props if keep is None else {k: props[k] for k in keep if k in props})
    return Survey(properties, by_name, duplicates)


def load_survey(path: str | Path, keep: frozenset[str] | None = None) -> Survey:
    """Read and validate the survey GeoJSON file (``keep``: see :func:`parse_survey`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PerceptError(f"survey GeoJSON {path} does not exist: check the -g/--geojson path") from None
    except OSError as exc:
        raise PerceptError(f"cannot read survey GeoJSON {path}: {exc}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PerceptError(f"survey GeoJSON {path} is not valid JSON ({exc}): fix or re-export the file") from None
    survey = parse_survey(data, str(path), keep)
    del data
    release_free_memory()
    return survey


@dataclass(frozen=True)
class RatingFilter:
    """The demographic filters of the drop-in CLI; ``None`` means no filter."""

    genders: tuple[str, ...] | None = None
    region: str | None = None
    age_range: tuple[int, int] | None = None
    educations: tuple[str, ...] | None = None

    def columns(self) -> tuple[str, ...]:
        """The CSV columns these filters read."""
        needed = []
        if self.genders is not None:
            needed.append("gender")
        if self.region is not None:
            needed += ["country", "postalcode"]
        if self.age_range is not None:
            needed.append("age")
        if self.educations is not None:
            needed.append("education")
        return tuple(needed)


def parse_list(text: str | None) -> tuple[str, ...] | None:
    """``a,b`` → ``('a', 'b')``."""
    return None if text is None else tuple(text.split(","))


def parse_age(text: str | None) -> tuple[int, int] | None:
    """``N`` → (N, 120); ``N,M`` → (N, M)."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(parts) not in (1, 2) or len(values) != len(parts):
        raise PerceptError(f"--age takes AGE_MIN or AGE_MIN,AGE_MAX (whole numbers), got {text!r}")
    low, high = values[0], values[1] if len(values) == 2 else MAX_AGE
    if low > high:
        raise PerceptError(f"--age range {text!r} is empty: the minimum exceeds the maximum")
    return low, high


def parse_region(text: str | None) -> str | None:
    if text is not None and text not in REGIONS:
        raise PerceptError(f"--region must be one of {', '.join(REGIONS)}, got {text!r}")
    return text


def load_ratings(path: str | Path, needed: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read the demographics CSV (one row per rating) with its integer columns checked."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise PerceptError(f"demographics CSV {path} does not exist: check the -d/--demographics path") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PerceptError(f"cannot read demographics CSV {path}: {exc}") from None
    missing = [c for c in (*REQUIRED_RATING_COLUMNS, *needed) if c not in frame.columns]
    if missing:
        raise PerceptError(f"demographics CSV {path} lacks column(s) {', '.join(missing)}: "
                           "export the ratings table with its demographic columns")
    for column in INTEGER_COLUMNS:
        if column in frame.columns:
            frame[column] = _integer_column(frame[column], column, path, allow_missing=column == "age")
    return frame


def _integer_column(values: pd.Series, column: str, path: Path, allow_missing: bool) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (numbers.isna() & values.notna()) | (numbers.notna() & (numbers % 1 != 0))
    if not allow_missing:
        bad |= values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PerceptError(f"demographics CSV {path}: column {column!r} needs whole numbers, but data row "
                           f"{row + 1} holds {values.iloc[row]!r}")
    return numbers.astype("Int64")


def filter_ratings(ratings: pd.DataFrame, rules: RatingFilter) -> pd.DataFrame:
    """Keep the rating rows that pass every active filter, in their original order."""
    keep = pd.Series(True, index=ratings.index)
    if rules.genders is not None:
        keep &= ratings["gender"].isin(rules.genders)
    if rules.region is not None:
        country = ratings["country"].map(lambda v: isinstance(v, str) and NL_COUNTRY.match(v) is not None)
        postcode = ratings["postalcode"].map(lambda v: isinstance(v, str) and NL_POSTCODE.match(v) is not None)
        in_nl = country | postcode
        keep &= in_nl if rules.region == "NL" else ~in_nl
    if rules.age_range is not None:
        low, high = rules.age_range
        keep &= ratings["age"].between(low, high).fillna(False).astype(bool)
    if rules.educations is not None:
        keep &= ratings["education"].isin(rules.educations)
    return ratings[keep.to_numpy()]


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


def match_features(names: list[str], survey: Survey) -> tuple[list[int | None], list[str]]:
    """For each embedding row, its survey feature index (or None), and the unmatched names."""
    matched = [survey.by_name.get(image_name(n)) for n in names]
    unmatched = [n for n, m in zip(names, matched) if m is None]
    return matched, unmatched


def average_samples(names: list[str], survey: Survey) -> SampleSet:
    """One sample per image and category whose ``average_<category>`` is present and not null."""
    matched, unmatched = match_features(names, survey)
    rows = {c: [] for c in CATEGORIES}
    scores = {c: [] for c in CATEGORIES}
    for row, feature in enumerate(matched):
        if feature is None:
            continue
        props = survey.features[feature]
        for category in CATEGORIES:
            value = props.get(f"average_{category}")
            if value is not None:
                rows[category].append(row)
                scores[category].append(float(value))
    return SampleSet({c: _samples(rows[c], scores[c]) for c in CATEGORIES}, unmatched)


def rating_samples(names: list[str], survey: Survey, ratings: pd.DataFrame) -> SampleSet:
    """One sample per rating row of each image, images in embedding order, ratings in CSV order."""
    matched, unmatched = match_features(names, survey)
    image_rows = pd.DataFrame({
        "row": [r for r, f in enumerate(matched) if f is not None],
        "image_id": pd.array([_image_id(survey.features[f]) for f in matched if f is not None], dtype="Int64"),
    })
    table = ratings[["image_id", "category_id", "rating"]].assign(csv_order=np.arange(len(ratings)))
    joined = image_rows.merge(table, on="image_id", how="inner").sort_values(["row", "csv_order"], kind="stable")
    unrated = len(image_rows) - joined["row"].nunique()
    by_category = {}
    for category_id, category in CATEGORY_BY_ID.items():
        part = joined[joined["category_id"] == category_id]
        by_category[category] = _samples(part["row"].to_numpy(), part["rating"].to_numpy(dtype=np.float64))
    return SampleSet(by_category, unmatched, unrated)


def _image_id(props: dict) -> int | None:
    value = props.get("image_id")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _samples(rows, scores) -> Samples:
    return Samples(np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float64))
