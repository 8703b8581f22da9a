"""Read OpenStreetMap ``maxspeed`` values as km/h.

``50`` → 50; ``30 mph`` → 48.28; ``50;30`` or a list (a simplified street joining ways) → the
median of its values; implicit values map through ``IMPLICIT_KMH``: first the whole value
(``DE:rural``), then the part after the country code (``urban``). Anything else (``signals``,
``variable``, text) is not a speed: None.
"""

from __future__ import annotations

import math
import re
from statistics import median

MPH_KMH = 1.609344
IMPLICIT_KMH = {
    # whole values
    "walk": 7.0, "none": 130.0, "DE:rural": 100.0, "AT:rural": 100.0, "FR:rural": 80.0, "NL:rural": 80.0,
    "GB:nsl_single": 60 * MPH_KMH, "GB:nsl_dual": 70 * MPH_KMH, "GB:motorway": 70 * MPH_KMH,
    "DE:motorway": 130.0, "NL:motorway": 100.0, "FI:motorway": 120.0,
    # the part after the country code (``XX:urban``)
    "urban": 50.0, "rural": 80.0, "motorway": 120.0, "trunk": 100.0, "living_street": 7.0,
    "pedestrian_zone": 7.0, "bicycle_road": 30.0, "cyclestreet": 30.0, "school": 30.0,
    "zone20": 20.0, "zone30": 30.0, "zone:20": 20.0, "zone:30": 30.0,
}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?\s*$", re.IGNORECASE)


def speed_kmh(value) -> float | None:
    """One edge's ``maxspeed`` (a string, number, list or missing) in km/h, or None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        speeds = [s for s in (speed_kmh(v) for v in value) if s is not None]
        return float(median(speeds)) if speeds else None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value > 0 else None
    text = str(value).strip()
    if ";" in text or "|" in text:
        return speed_kmh(re.split(r"[;|]", text))
    return _single(text)


def _single(text: str) -> float | None:
    match = _NUMBER.match(text)
    if match:
        number = float(match.group(1))
        if number <= 0:
            return None
        return number * MPH_KMH if (match.group(2) or "").lower() == "mph" else number
    if text in IMPLICIT_KMH:
        return IMPLICIT_KMH[text]
    _, _, kind = text.partition(":")
    return IMPLICIT_KMH.get(kind) if kind else None
