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
from percept.data.survey import SampleSet, Survey, match_features, to_samples
from percept.errors import PerceptError

INTEGER_COLUMNS = ("image_id", "category_id", "rating_id", "session_id", "rating", "score", "age")
REQUIRED_RATING_COLUMNS = ("image_id", "category_id", "rating")


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
        "image_id": pd.array([_image_id(survey.features[f]) for f in matched if f is not None], dtype="Int64"),
    })
    table = ratings.assign(csv_order=np.arange(len(ratings)))
    joined = image_rows.merge(table, on="image_id", how="inner").sort_values(["row", "csv_order"], kind="stable")
    unrated = len(image_rows) - joined["row"].nunique()
    frames = {category: joined[joined["category_id"] == category_id].reset_index(drop=True)
              for category_id, category in CATEGORY_BY_ID.items()}
    by_category = {category: to_samples(frame["row"].to_numpy(), frame["rating"].to_numpy(dtype=np.float64))
                   for category, frame in frames.items()}
    return SampleSet(by_category, unmatched, unrated, frames)


def _image_id(props: dict) -> int | None:
    value = props.get("image_id")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
