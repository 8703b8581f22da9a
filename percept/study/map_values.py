"""What a map shows: a category's score, its spread, its interval width or the out-of-domain share.

Each value has its own title, legend label with units, colour range and colour map, so a map of
spreads never reads as a map of scores. :class:`PointValues` holds, per rated point, what a map's
cells are summarised from; :func:`value_of` picks the mapped value and names the missing columns
when a file cannot give it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from percept.data.crs import WGS84
from percept.errors import PerceptError
from percept.study.places import Places, check_coordinates

VALUES = ("score", "sd", "width", "out_of_domain")
SCORE_SCALE = (1.0, 5.0)
SHARE_RANGE = (0.0, 100.0)
DEFAULT_LEVEL = 0.9
#: Colour maps per value (all sequential and colour-blind safe); shares and spreads leave out their
#: near-white ends so that low values still read as drawn cells.
DEFAULT_CMAPS = {"score": "viridis", "sd": "YlOrBr", "width": "PuRd", "out_of_domain": "Blues"}


@dataclass(frozen=True)
class ValueSpec:
    """How one mapped value is named and drawn."""

    value: str  # one of VALUES
    name: str  # what is mapped, as the GeoJSON and messages call it (walkability, walkability_sd, ...)
    title: str
    legend: str
    cmap: str
    fixed_range: tuple[float, float] | None  # the default colour range; None: 0 to the data's maximum
    percent: bool = False  # the value is a share (0-1) drawn in per cent


def parse_value(text: str | None, category: str) -> tuple[str, str | None]:
    """``--value``: (one of VALUES, None), or ("score", COLUMN) for a column or property holding scores.

    ``<category>_sd`` means ``sd``, so an old ``--value walkability_sd`` still maps the spread as one.
    """
    text = (text or "score").strip()
    if text in VALUES:
        return text, None
    if text == f"{category}_sd":
        return "sd", None
    if not text:
        raise PerceptError(f"--value takes {', '.join(VALUES)} or a column holding scores")
    return "score", text


def value_spec(value: str, category: str, level: float = DEFAULT_LEVEL, column: str | None = None) -> ValueSpec:
    """Title, legend label, colour map and default colour range of ``value`` for ``category``."""
    label = category.capitalize()
    cmap = DEFAULT_CMAPS[value]
    if value == "score":
        legend = f"mean {column}" if column else f"mean {category} score (1–5 scale)"
        return ValueSpec(value, column or category, label, legend, cmap, SCORE_SCALE)
    if value == "sd":
        return ValueSpec(value, f"{category}_sd", f"{label}: spread of neighbours' scores",
                         f"mean sd of the neighbours' {category} scores (score points)", cmap, None)
    if value == "width":
        percent = f"{level * 100:g} %"
        return ValueSpec(value, f"{category}_width", f"{label}: width of the {percent} interval",
                         f"mean width of the {percent} prediction interval (score points)", cmap, None)
    if value == "out_of_domain":
        return ValueSpec(value, "out_of_domain", "Share outside the survey's domain",
                         "images outside the survey's domain (% per cell)", cmap, SHARE_RANGE, percent=True)
    raise PerceptError(f"--value takes {', '.join(VALUES)}, got {value!r}")


@dataclass
class PointValues:
    """Per point, one category's score, sd, interval bounds and out-of-domain flag (None: not in the file)."""

    category: str
    score: np.ndarray
    sd: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    out_of_domain: np.ndarray | None = None

    @classmethod
    def of_rated(cls, rated, category: str, source: str) -> PointValues:
        """One category's columns of rated points (anything with the fields of ``percept.city``'s RatedPoints)."""
        if category not in rated.categories:
            raise PerceptError(f"{source} has no {category} scores (it has {', '.join(rated.categories)}): "
                               "pick one of those with --category")
        column = rated.categories.index(category)
        pick = lambda table: None if table is None else np.asarray(table, dtype=np.float64)[:, column]
        ood = None if rated.out_of_domain is None else np.asarray(rated.out_of_domain, dtype=bool)
        scores = np.asarray(rated.scores, dtype=np.float64)[:, column]
        return cls(category, scores, pick(rated.sd), pick(rated.lo), pick(rated.hi), ood)

    def width(self) -> np.ndarray | None:
        """The interval widths ``hi - lo`` (NaN where unknown); None when the file has no bounds."""
        if self.lo is None or self.hi is None:
            return None
        return self.hi - self.lo

    def subset(self, keep: np.ndarray) -> PointValues:
        """The points where ``keep`` is true."""
        cut = lambda values: None if values is None else values[keep]
        return PointValues(self.category, self.score[keep], cut(self.sd), cut(self.lo), cut(self.hi),
                           cut(self.out_of_domain))


def value_of(points: PointValues, value: str, source: str) -> np.ndarray:
    """The mapped value of every point (NaN where a point has none; shares as 0/1); an error naming the
    columns ``source`` lacks."""
    category = points.category
    if value == "score":
        return points.score
    if value == "sd":
        if points.sd is None or np.isnan(points.sd).all():
            raise PerceptError(f"{source} has no {category}_sd column to map the spread: rate it again with "
                               "'percept rate' (which writes it), or map --value score")
        return points.sd
    if value == "width":
        width = points.width()
        if width is None or np.isnan(width).all():
            raise PerceptError(f"{source} has no {category}_lo and {category}_hi columns to map interval widths: "
                               "rate it with a model that holds an interval calibration ('percept rate --interval "
                               "0.9'), or map --value score or sd")
        return width
    if value == "out_of_domain":
        if points.out_of_domain is None:
            raise PerceptError(f"{source} has no out_of_domain column to map its share: rate it again with "
                               "'percept rate' (which writes it), or map --value score")
        return points.out_of_domain.astype(np.float64)
    raise PerceptError(f"--value takes {', '.join(VALUES)}, got {value!r}")


def rated_places(lon: np.ndarray, lat: np.ndarray, points: PointValues, value: str, source: str,
                 crs=None) -> tuple[Places, PointValues]:
    """The located points that have the mapped value, as Places (coordinates checked) and their PointValues;
    ``crs`` (default WGS84) is what the coordinates were declared in."""
    values = value_of(points, value, source)
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    keep = np.isfinite(values) & np.isfinite(lon) & np.isfinite(lat)
    if not keep.any():
        raise PerceptError(f"{source} has no located image with a {value_spec(value, points.category).name} "
                           "value to map")
    places = Places(crs or WGS84, values[keep], lon[keep], lat[keep])
    check_coordinates(places, source, explicit=crs is not None)
    return places, points.subset(keep)
