"""The demographic filters of individual ratings: their flags, parsing, the region rule and age bands.

Ages are whole years or, in coarsened files, bands such as ``25-34`` or ``65+``. ``--age LO,HI``
keeps an age band only when the whole band lies within LO..HI: ``--age 25,44`` keeps 25-34 and
35-44, and ``--age 30,49`` keeps only 35-44, as 25-34 and 45-54 straddle its ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from percept.errors import PerceptError

NL_COUNTRY = re.compile(r"^NL$|Nederland|Netherlands|Dutch|Utrecht|Amsterdam|netherland|netjerlands|Netherl")
NL_POSTCODE = re.compile(r"^[0-9]{4} *[A-Z]{2}$")
REGIONS = ("NL", "non-NL")
MAX_AGE = 120
AGE_BAND = re.compile(r"^(\d{1,3}) *[-\u2013] *(\d{1,3})$|^(\d{1,3}) *\+$")


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


def in_netherlands(country: object, postcode: object) -> bool:
    """The original tool's NL rule: country matches its pattern (at the start) or a Dutch postcode."""
    return ((isinstance(country, str) and NL_COUNTRY.match(country) is not None)
            or (isinstance(postcode, str) and NL_POSTCODE.match(postcode) is not None))


def age_band_label(low: int, high: int | None) -> str:
    """``25-34``, or ``65+`` for an open band (``high`` None)."""
    return f"{low}+" if high is None else f"{low}-{high}"


def parse_age_band(text: str) -> tuple[int, int] | None:
    """``25-34`` → (25, 34); ``65+`` → (65, MAX_AGE); None when ``text`` is no age band."""
    match = AGE_BAND.match(text.strip())
    if match is None:
        return None
    if match.group(3) is not None:
        return int(match.group(3)), max(int(match.group(3)), MAX_AGE)
    low, high = int(match.group(1)), int(match.group(2))
    return (low, high) if low <= high else None
