"""Individual ratings (the survey's demographics CSV): loading, demographic filtering, samples.

One row per rating; samples follow the embedding rows, and each image's ratings
follow the CSV order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from percept.categories import CATEGORY_BY_ID
from percept.data.filters import RatingFilter, in_netherlands
from percept.data.survey import SampleSet, Survey, image_name, match_features, to_samples
from percept.errors import PerceptError

INTEGER_COLUMNS = ("image_id", "category_id", "rating_id", "session_id", "rating", "score", "age")
REQUIRED_RATING_COLUMNS = ("image_id", "category_id", "rating")
#: The values an integer column may hold (inclusive); others hold any whole number numpy can count exactly.
COLUMN_RANGES = {"category_id": (1, 5), "rating": (1, 5), "age": (0, 150)}
WHOLE_NUMBER_LIMIT = 2 ** 53


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
    """The column as Int64, refusing text, fractions and values outside the column's range."""
    low, high = COLUMN_RANGES.get(column, (-WHOLE_NUMBER_LIMIT, WHOLE_NUMBER_LIMIT))
    texts = values.to_numpy(dtype=object)
    try:  # the usual case, ASCII whole numbers in every row, at numpy's speed; anything else is checked below
        plain = "".join(texts).isascii() and not any("_" in text for text in texts)  # int() reads "1_000", "٣"
        whole = texts.astype(np.int64) if plain else None
    except (TypeError, ValueError, OverflowError):
        whole = None
    if whole is not None and (len(whole) == 0 or (whole.min() >= low and whole.max() <= high)):
        return pd.Series(whole, index=values.index, dtype="Int64")
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (numbers.isna() & values.notna()) | (numbers.notna() & ((numbers % 1 != 0) | ~numbers.between(low, high)))
    if not allow_missing:
        bad |= values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        needs = f"whole numbers from {low} to {high}" if column in COLUMN_RANGES else "whole numbers"
        raise PerceptError(f"demographics CSV {path}: column {column!r} needs {needs}, but data row "
                           f"{row + 1} holds {values.iloc[row]!r}")
    return numbers.astype("Int64")


def filter_ratings(ratings: pd.DataFrame, rules: RatingFilter) -> pd.DataFrame:
    """Keep the rating rows that pass every active filter, in their original order."""
    keep = pd.Series(True, index=ratings.index)
    if rules.genders is not None:
        keep &= ratings["gender"].isin(rules.genders)
    if rules.region is not None:
        in_nl = pd.Series([in_netherlands(c, p) for c, p in zip(ratings["country"], ratings["postalcode"])],
                          index=ratings.index, dtype=bool)
        keep &= in_nl if rules.region == "NL" else ~in_nl
    if rules.age_range is not None:
        low, high = rules.age_range
        keep &= ratings["age"].between(low, high).fillna(False).astype(bool)
    if rules.educations is not None:
        keep &= ratings["education"].isin(rules.educations)
    return ratings[keep.to_numpy()]


def rating_samples(names: list[str], survey: Survey, ratings: pd.DataFrame) -> SampleSet:
    """One sample per rating row of each image, images in embedding order, ratings in CSV order.

    The result also keeps, per category, the rating rows behind the samples (every CSV
    column plus the vector ``row``), for comparing groups of raters.
    """
    matched, unmatched = match_features(names, survey)
    image_rows = pd.DataFrame({
        "row": [r for r, f in enumerate(matched) if f is not None],
        "image_id": pd.array([_image_id(survey, f) for f in matched if f is not None], dtype="Int64"),
    })
    table = ratings.assign(csv_order=np.arange(len(ratings)))
    joined = image_rows.merge(table, on="image_id", how="inner").sort_values(["row", "csv_order"], kind="stable")
    unrated = len(image_rows) - joined["row"].nunique()
    frames = {category: joined[joined["category_id"] == category_id].reset_index(drop=True)
              for category_id, category in CATEGORY_BY_ID.items()}
    by_category = {category: to_samples(frame["row"].to_numpy(), frame["rating"].to_numpy(dtype=np.float64))
                   for category, frame in frames.items()}
    return SampleSet(by_category, unmatched, unrated, frames)


def _image_id(survey: Survey, feature: int) -> int:
    """The feature's ``image_id``, which joins it to its rating rows: a whole JSON number."""
    value = survey.features[feature].get("image_id")
    if type(value) is int or (type(value) is float and value.is_integer() and abs(value) <= WHOLE_NUMBER_LIMIT):
        return int(value)
    what = "has no 'image_id'" if value is None else f"holds 'image_id' {value!r}, not a whole number"
    raise PerceptError(f"{survey.source}: feature {feature} ({image_name(survey.features[feature]['url'])}) "
                       f"{what}: ratings are joined to images by it, so fix the survey GeoJSON")
