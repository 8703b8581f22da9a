"""Raters' privacy without a database: pseudonyms, age bands, postcode prefixes, and the -d filters on
coarsened ratings (age bands within or straddling --age, the region column)."""

from __future__ import annotations

import hashlib
import hmac
import re

import pandas as pd
import pytest

from percept.city.survey_privacy import (
    COARSE_COLUMNS,
    FULL_COLUMNS,
    Coarsening,
    Privacy,
    Pseudonyms,
    age_band,
    postcode_prefix,
    resolve_pseudonyms,
)
from percept.data.filters import RatingFilter, parse_age_band
from percept.data.ratings import filter_ratings, load_ratings
from percept.errors import PerceptError

KEY = "0123456789abcdef-key"


def test_pseudonyms_are_truncated_hmac_sha256_of_the_person():
    pseudonyms = Pseudonyms.from_key(KEY)
    for person in (1, 2, 77, 123456):
        expected = hmac.new(KEY.encode(), f"person:{person}".encode(), hashlib.sha256).hexdigest()[:16]
        assert pseudonyms(person) == expected
    assert Pseudonyms.from_key(KEY + "x")(1) != pseudonyms(1)
    assert Pseudonyms.random()(1) != Pseudonyms.random()(1)
    assert KEY not in repr(pseudonyms) and KEY.encode() not in repr(pseudonyms).encode()


def test_the_key_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.setenv("PERCEPT_PSEUDONYM_KEY", KEY)
    assert resolve_pseudonyms(None)(5) == Pseudonyms.from_key(KEY)(5)
    assert resolve_pseudonyms("another-key-of-16+")(5) == Pseudonyms.from_key("another-key-of-16+")(5)
    monkeypatch.setenv("PERCEPT_PSEUDONYM_KEY", "")
    assert resolve_pseudonyms(None).from_random_key
    with pytest.raises(PerceptError, match="fewer than 16"):
        resolve_pseudonyms("")


@pytest.mark.parametrize("age, band", [
    (None, None), (0, "0-17"), (17, "0-17"), (18, "18-24"), (24, "18-24"), (25, "25-34"), (34, "25-34"),
    (35, "35-44"), (44, "35-44"), (45, "45-54"), (54, "45-54"), (55, "55-64"), (64, "55-64"), (65, "65+"),
    (119, "65+"),
])
def test_age_bands(age, band):
    assert age_band(age) == band


def test_postcode_prefixes():
    assert postcode_prefix(" 1012 AB", 2) == "10"
    assert postcode_prefix("1012 AB", 4) == "1012"
    assert postcode_prefix("1012 AB", 0) is None
    assert postcode_prefix(None, 2) is None
    with pytest.raises(PerceptError, match="--postcode-digits"):
        Coarsening(-1)


def test_rows_are_shaped_for_full_and_coarse_exports():
    row = (7, "2024-01-10 12:00:00+01", 3, 11, 2, 4, "3511 CD", None, 47, ">3000", "Tertiary", "man")
    full = Privacy(Pseudonyms.from_key(KEY))
    assert dict(zip(full.columns, full.row_shaper()(row))) == dict(zip(FULL_COLUMNS, (
        7, "2024-01-10 12:00:00+01", Pseudonyms.from_key(KEY)(3), 11, 2, 4, "3511 CD", None, 47, ">3000",
        "Tertiary", "man")))
    coarse = Privacy(Pseudonyms.from_key(KEY), Coarsening(2))
    shaped = dict(zip(coarse.columns, coarse.row_shaper()(row)))
    assert coarse.columns == COARSE_COLUMNS and "monthly_gross_income" not in shaped
    assert (shaped["age"], shaped["postalcode"], shaped["region"]) == ("45-54", "35", "NL")


@pytest.mark.parametrize("text, bounds", [
    ("25-34", (25, 34)), ("65+", (65, 120)), ("18 – 24", (18, 24)), ("34-25", None), ("thirty", None), ("30", None),
])
def test_age_band_labels_parse(text, bounds):
    assert parse_age_band(text) == bounds


def write_ratings(tmp_path, ages, regions=None):
    path = tmp_path / "demo.csv"
    frame = pd.DataFrame({"image_id": range(1, len(ages) + 1), "category_id": 1, "rating": 3, "age": ages})
    if regions is not None:
        frame["region"] = regions
    frame.to_csv(path, index=False)
    return path


BANDS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+", "", "25-34"]


@pytest.mark.parametrize("age_range, kept, note", [
    ((25, 44), ["25-34", "35-44", "25-34"], None),
    ((30, 49), ["35-44"], "left out 3 ratings in age bands that straddle an end of the range (25-34: 2, 45-54: 1)"),
    ((30, 120), ["35-44", "45-54", "55-64", "65+"], "left out 2 ratings"),
    ((18, 120), ["18-24", "25-34", "35-44", "45-54", "55-64", "65+", "25-34"], None),
    ((70, 80), [], "left out 1 ratings in age bands that straddle an end of the range (65+: 1)"),
])
def test_age_filter_keeps_the_bands_within_the_range(tmp_path, age_range, kept, note):
    notes = []
    ratings = load_ratings(write_ratings(tmp_path, BANDS), ("age",))
    left = filter_ratings(ratings, RatingFilter(age_range=age_range), notes.append)
    assert left["age"].tolist() == kept
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and note in notes[0] and f"--age {age_range[0]},{age_range[1]}" in notes[0]


def test_exact_ages_and_bands_mix(tmp_path):
    ratings = load_ratings(write_ratings(tmp_path, ["31", "25-34", "49", "50"]), ("age",))
    left = filter_ratings(ratings, RatingFilter(age_range=(30, 49)))
    assert left["age"].tolist() == ["31", "49"]
    exact = load_ratings(write_ratings(tmp_path, ["31", "29", "49", "50"]), ("age",))
    assert str(exact["age"].dtype) == "Int64"  # files without bands read as before
    assert filter_ratings(exact, RatingFilter(age_range=(30, 49)))["age"].tolist() == [31, 49]


@pytest.mark.parametrize("value", ["34-25", "200+", "25-160", "ninety", "-3"])
def test_bad_age_values_in_a_banded_file_are_named(tmp_path, value):
    with pytest.raises(PerceptError, match=rf"column 'age' needs whole numbers from 0 to 150 or age bands.*data row 2 "
                                           rf"holds '{re.escape(value)}'"):
        load_ratings(write_ratings(tmp_path, ["25-34", value]))


def test_region_column_decides_the_region_filter(tmp_path):
    path = write_ratings(tmp_path, ["25-34", "25-34", "35-44"], ["NL", "non-NL", None])
    ratings = load_ratings(path).assign(country="", postalcode="10")
    assert filter_ratings(ratings, RatingFilter(region="NL"))["image_id"].tolist() == [1]
    assert filter_ratings(ratings, RatingFilter(region="non-NL"))["image_id"].tolist() == [2]
    with pytest.raises(PerceptError, match="column 'region' holds NL, non-NL or nothing, but data row 1 holds 'EU'"):
        load_ratings(write_ratings(tmp_path, ["25-34"], ["EU"]))
