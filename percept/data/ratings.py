"""Individual ratings (the survey's demographics CSV): loading, demographic filtering, samples.

One row per rating; samples follow the embedding rows, and each image's ratings
follow the CSV order. Coarsened exports hold age bands (``25-34``, ``65+``) instead of
ages, and a ``region`` column (NL or non-NL, decided on the full postcode before it was
cut), which ``--region`` then reads instead of country and postcode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from percept.categories import CATEGORY_BY_ID
from percept.data.filters import REGIONS, RatingFilter, in_netherlands, parse_age_band
from percept.data.survey import SampleSet, Survey, image_name, match_features, to_samples
from percept.errors import PerceptError

INTEGER_COLUMNS = ("image_id", "category_id", "rating_id", "session_id", "rating", "score", "age")
REQUIRED_RATING_COLUMNS = ("image_id", "category_id", "rating")
#: The values an integer column may hold (inclusive); others hold any whole number numpy can count exactly.
COLUMN_RANGES = {"category_id": (1, 5), "rating": (1, 5), "age": (0, 150)}
WHOLE_NUMBER_LIMIT = 2 ** 53
REGION_COLUMN = "region"


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
            convert = _age_column if column == "age" else _integer_column
            frame[column] = convert(frame[column], column, path, allow_missing=column == "age")
    if REGION_COLUMN in frame.columns:
        _check_regions(frame[REGION_COLUMN], path)
    return frame


def _age_column(values: pd.Series, column: str, path: Path, allow_missing: bool) -> pd.Series:
    """Whole-year ages as Int64; a column that also holds age bands stays text, each value checked."""
    try:
        return _integer_column(values, column, path, allow_missing)
    except PerceptError:
        if not values.dropna().map(parse_age_band).notna().any():
            raise
    low, high = COLUMN_RANGES["age"]
    for row, text in enumerate(values):
        if isinstance(text, str) and not _valid_age(text.strip(), low, high):
            raise PerceptError(f"demographics CSV {path}: column 'age' needs whole numbers from {low} to {high} or "
                               f"age bands such as 25-34 or 65+, but data row {row + 1} holds {text!r}")
    return values.str.strip()


def _valid_age(text: str, low: int, high: int) -> bool:
    if text.isascii() and text.isdigit():
        return low <= int(text) <= high
    band = parse_age_band(text)
    return band is not None and low <= band[0] and band[1] <= high


def _check_regions(values: pd.Series, path: Path) -> None:
    bad = values.notna() & ~values.isin(REGIONS)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PerceptError(f"demographics CSV {path}: column {REGION_COLUMN!r} holds {', '.join(REGIONS)} or "
                           f"nothing, but data row {row + 1} holds {values.iloc[row]!r}")


def age_bounds(ages: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The youngest and oldest age each row's value allows (NaN where missing): an age is both, a band
    ``25-34`` gives 25 and 34, an open band ``65+`` 65 and the filters' maximum age."""
    if not (pd.api.types.is_string_dtype(ages) or ages.dtype == object):
        exact = ages.to_numpy(dtype=np.float64, na_value=np.nan)
        return exact, exact
    low, high = np.full(len(ages), np.nan), np.full(len(ages), np.nan)
    for row, text in enumerate(ages):
        if not isinstance(text, str):
            continue
        band = (int(text), int(text)) if text.isdigit() else parse_age_band(text)
        if band is not None:  # the column was checked when read: every text is an age or a band
            low[row], high[row] = band
    return low, high


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


def filter_ratings(ratings: pd.DataFrame, rules: RatingFilter,
                   log: Callable[[str], None] = lambda message: None) -> pd.DataFrame:
    """Keep the rating rows that pass every active filter, in their original order.

    An age band passes ``--age`` only when it lies within the range; ``log`` gets one note
    counting the ratings of bands that straddle an end of the range.
    """
    keep = pd.Series(True, index=ratings.index)
    if rules.genders is not None:
        keep &= ratings["gender"].isin(rules.genders)
    if rules.region is not None:
        keep &= _in_region(ratings, rules.region)
    if rules.age_range is not None:
        keep &= _in_age_range(ratings["age"], rules.age_range, log)
    if rules.educations is not None:
        keep &= ratings["education"].isin(rules.educations)
    return ratings[keep.to_numpy()]


def _in_region(ratings: pd.DataFrame, region: str) -> pd.Series:
    """Rows of raters in ``region``: the ``region`` column where the file has one, else the NL rule."""
    if REGION_COLUMN in ratings.columns:
        return (ratings[REGION_COLUMN] == region).fillna(False).astype(bool)
    in_nl = pd.Series([in_netherlands(c, p) for c, p in zip(ratings["country"], ratings["postalcode"])],
                      index=ratings.index, dtype=bool)
    return in_nl if region == "NL" else ~in_nl


def _band_order(band: str) -> tuple[int, int]:
    """An age band's place in a list: by its youngest, then its oldest age."""
    return parse_age_band(band) or (0, 0)


def _in_age_range(ages: pd.Series, age_range: tuple[int, int], log: Callable[[str], None]) -> pd.Series:
    low, high = age_bounds(ages)
    first, last = age_range
    inside = (low >= first) & (high <= last)
    straddling = (low <= last) & (high >= first) & ~inside
    if straddling.any():
        counts = pd.Series(ages.to_numpy()[straddling]).value_counts()
        listed = ", ".join(f"{band}: {counts[band]}" for band in sorted(counts.index, key=_band_order))
        log(f"note: --age {first},{last} left out {int(straddling.sum())} ratings in age bands that straddle "
            f"an end of the range ({listed}); a band is kept only when it lies within the range")
    return pd.Series(inside, index=ages.index)


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
