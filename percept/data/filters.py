"""The demographic filters of individual ratings: their flags, parsing and the region rule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from percept.errors import PerceptError

NL_COUNTRY = re.compile(r"^NL$|Nederland|Netherlands|Dutch|Utrecht|Amsterdam|netherland|netjerlands|Netherl")
NL_POSTCODE = re.compile(r"^[0-9]{4} *[A-Z]{2}$")
REGIONS = ("NL", "non-NL")
MAX_AGE = 120


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


def in_netherlands(country, postcode) -> bool:
    """The original tool's NL rule: country matches its pattern (at the start) or a Dutch postcode."""
    return ((isinstance(country, str) and NL_COUNTRY.match(country) is not None)
            or (isinstance(postcode, str) and NL_POSTCODE.match(postcode) is not None))
