"""Which of an area's images to collect: inside the box, recent enough, panoramas or not, spaced out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from percept.city.spatial_index import great_circle_m
from percept.city.tiles import Bbox, CoverageImage
from percept.errors import PerceptError


@dataclass(frozen=True)
class Selection:
    """Filters for coverage images; ``since_ms`` in milliseconds since the epoch."""

    bbox: Bbox
    since_ms: int | None = None
    panoramas: bool = True
    spacing_m: float | None = None


def select_images(images: Iterable[CoverageImage], selection: Selection) -> list[CoverageImage]:
    """Images (each id once) that pass the filters; with a spacing, walk each sequence in capture order
    and keep an image only when it lies at least ``spacing_m`` from the last one kept.
    Result in sequence, then capture order."""
    unique: dict[str, CoverageImage] = {}
    for image in images:
        if (selection.bbox.contains(image.lon, image.lat)
                and (selection.since_ms is None or image.captured_at >= selection.since_ms)
                and (selection.panoramas or not image.is_pano)):
            unique.setdefault(image.id, image)
    sequences: defaultdict[str, list[CoverageImage]] = defaultdict(list)
    for image in unique.values():
        sequences[image.sequence or f"\0{image.id}"].append(image)
    chosen: list[CoverageImage] = []
    for key in sorted(sequences):
        walk = sorted(sequences[key], key=lambda image: (image.captured_at, image.id))
        chosen.extend(space_out(walk, selection.spacing_m) if selection.spacing_m else walk)
    return chosen


def space_out(walk: list[CoverageImage], spacing_m: float) -> list[CoverageImage]:
    """The images of one sequence (in capture order) kept at least ``spacing_m`` apart, the first always."""
    kept = [walk[0]]
    for image in walk[1:]:
        last = kept[-1]
        if float(great_circle_m(last.lat, last.lon, image.lat, image.lon)) >= spacing_m:
            kept.append(image)
    return kept


def parse_since(text: str) -> int:
    """``YYYY-MM-DD`` → milliseconds since the epoch at that day's start (UTC)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise PerceptError(f"--since needs a date as YYYY-MM-DD, got {text!r}") from None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
