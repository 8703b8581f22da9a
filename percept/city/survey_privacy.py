"""Raters' privacy in the survey export: pseudonyms for raters and coarsened demographics.

A rater's pseudonym is the first 16 hex digits of HMAC-SHA256(key, ``person:<person id>``): the
same key gives the same pseudonym in every export, and without the key a pseudonym cannot be
traced back to the survey database. Coarsening writes ages as bands, keeps the first characters
of postcodes, drops income, and adds ``region`` (NL or non-NL, decided on the full postcode),
so the ``--region`` filter gives the same answer on coarsened files.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from percept.data.filters import age_band_label, in_netherlands
from percept.errors import PerceptError

KEY_ENV = "PERCEPT_PSEUDONYM_KEY"
MIN_KEY_CHARS = 16
PSEUDONYM_HEX_DIGITS = 16
DEFAULT_POSTCODE_CHARS = 2
ADULT_AGE_BANDS = ((18, 24), (25, 34), (35, 44), (45, 54), (55, 64), (65, None))
MINOR_AGE_BAND = (0, 17)  # only raters kept with --no-adults-only fall in it

#: The export's columns in their order: as read from the database (the rrating view's, with the
#: rater's person id where the view has the session id), and as written.
SOURCE_COLUMNS = ("rating_id", "ts", "person_id", "image_id", "category_id", "rating", "postalcode", "country",
                  "age", "monthly_gross_income", "education", "gender")
FULL_COLUMNS = ("rating_id", "ts", "rater", "image_id", "category_id", "rating", "postalcode", "country",
                "age", "monthly_gross_income", "education", "gender")
COARSE_COLUMNS = ("rating_id", "ts", "rater", "image_id", "category_id", "rating", "postalcode", "country",
                  "age", "education", "gender", "region")


@dataclass(frozen=True)
class Pseudonyms:
    """Keyed pseudonyms of person ids; ``from_random_key`` when the key was made for this export only."""

    key: bytes = field(repr=False)
    from_random_key: bool = False

    @classmethod
    def random(cls) -> Pseudonyms:
        return cls(secrets.token_bytes(32), from_random_key=True)

    @classmethod
    def from_key(cls, key: str) -> Pseudonyms:
        if len(key) < MIN_KEY_CHARS:
            raise PerceptError(f"the pseudonym key has {len(key)} characters, fewer than {MIN_KEY_CHARS}: a short "
                               "key can be guessed, which undoes the pseudonyms; make one with "
                               "python3 -c 'import secrets; print(secrets.token_hex(16))'")
        return cls(key.encode("utf-8"))

    def __call__(self, person_id: int) -> str:
        digest = hmac.new(self.key, f"person:{person_id}".encode("ascii"), hashlib.sha256)
        return digest.hexdigest()[:PSEUDONYM_HEX_DIGITS]


def resolve_pseudonyms(option: str | None) -> Pseudonyms:
    """Pseudonyms keyed by ``--pseudonym-key``, else ``PERCEPT_PSEUDONYM_KEY``, else a random key."""
    if option is not None:
        return Pseudonyms.from_key(option)
    key = os.environ.get(KEY_ENV)
    return Pseudonyms.from_key(key) if key else Pseudonyms.random()


@dataclass(frozen=True)
class Coarsening:
    """Ages as bands, postcodes cut to their first ``postcode_chars`` characters, no income."""

    postcode_chars: int = DEFAULT_POSTCODE_CHARS

    def __post_init__(self):
        if self.postcode_chars < 0:
            raise PerceptError(f"--postcode-digits needs a whole number of 0 or more, got {self.postcode_chars}")

    def describe(self) -> str:
        kept = (f"their first {self.postcode_chars} character(s)" if self.postcode_chars
                else "none of their characters")
        return (f"ages as bands ({', '.join(age_band_label(low, high) for low, high in ADULT_AGE_BANDS)}; "
                f"{age_band_label(*MINOR_AGE_BAND)} for raters under 18), postcodes cut to {kept}, income left out")


def age_band(age: int | None) -> str | None:
    """The band label of an age (``25-34``, ``65+``, ``0-17`` under 18); None for no age."""
    if age is None:
        return None
    for low, high in (MINOR_AGE_BAND, *ADULT_AGE_BANDS):
        if age >= low and (high is None or age <= high):
            return age_band_label(low, high)
    return None  # a negative age is no age


def postcode_prefix(postcode: str | None, chars: int) -> str | None:
    """The first ``chars`` characters of a postcode, surrounding spaces removed; None when none are left."""
    if postcode is None:
        return None
    return postcode.strip()[:chars] or None


@dataclass(frozen=True)
class Privacy:
    """How rater ids and demographics are written: keyed pseudonyms, and coarsening or None."""

    pseudonyms: Pseudonyms = field(default_factory=Pseudonyms.random)
    coarsening: Coarsening | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return FULL_COLUMNS if self.coarsening is None else COARSE_COLUMNS

    def row_shaper(self) -> Callable[[tuple], tuple]:
        """A function turning a database row (``SOURCE_COLUMNS``) into the written row (``columns``);
        each person's pseudonym is computed once."""
        known: dict[int, str] = {}
        coarsening = self.coarsening

        def shape(row: tuple) -> tuple:
            rating_id, ts, person_id, image_id, category_id, rating, postcode, country, age, income, \
                education, gender = row
            rater = known.get(person_id)
            if rater is None:
                rater = known[person_id] = self.pseudonyms(person_id)
            if coarsening is None:
                return (rating_id, ts, rater, image_id, category_id, rating, postcode, country, age, income,
                        education, gender)
            region = "NL" if in_netherlands(country, postcode) else "non-NL"
            return (rating_id, ts, rater, image_id, category_id, rating,
                    postcode_prefix(postcode, coarsening.postcode_chars), country, age_band(age), education, gender,
                    region)

        return shape
