"""Collect a city's street-level imagery from Mapillary: coverage tiles → filters → entity → thumbnail.

Writes ``DIR/images/<id>.jpg`` and ``DIR/locations.csv`` (image, lon, lat, angle, sequence,
captured_at, is_pano), the locations file ``percept rate --locations`` reads. A rerun skips images
already in the folder and listed in locations.csv; thumbnails whose signed URL has expired (403/410)
are asked for again through the image's entity. Failures go to ``DIR/failed.csv`` (item, reason).

The token stays with Mapillary: image entities are asked of the Graph API with an
``Authorization`` header, over a client of their own; coverage tiles and thumbnails are fetched
by a second client that sends no ``Authorization`` header. The tiles host takes the token only as
its ``access_token`` query parameter (it refuses the header), which that client adds to tile
requests alone; thumbnails, signed URLs on other hosts, get no token at all, and with an https API
a plain-http thumbnail (or a redirect to one) is refused and listed in failed.csv. The token
never appears in messages, failed.csv or locations.csv.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from percept.atomic import atomic_write_text
from percept.city.download import (
    DownloadError,
    HttpFetcher,
    Stopped,
    failures_csv,
    present_files,
    remove_stale_temporaries,
    run_concurrently,
)
from percept.city.mapillary import DEFAULT_BASE_URL, PLAIN_HTTP_REASON, plain_http_refused, redact
from percept.city.retry import RetryPolicy
from percept.city.selection import Selection, select_images
from percept.city.tiles import ZOOM, CoverageImage, decode_image_tile, tiles_covering
from percept.errors import PerceptError

DEFAULT_TILES_URL = "https://tiles.mapillary.com"
TILE_PATH = "maps/vtp/mly1_public/2/{z}/{x}/{y}"
SIZES = ("1024", "2048", "original")  # thumb_<size>_url fields of an image entity
LOCATION_COLUMNS = ("image", "lon", "lat", "angle", "sequence", "captured_at", "is_pano")
FAILED_COLUMNS = ("item", "reason")
NO_COVERAGE = frozenset({403, 404})
EXPIRED = frozenset({403, 410})
REFETCHES = 2
SAVE_EVERY = 100


@dataclass(frozen=True)
class CollectOptions:
    selection: Selection
    token: str
    size: str = "1024"
    api_url: str = DEFAULT_BASE_URL
    tiles_url: str = DEFAULT_TILES_URL
    connections: int = 8
    policy: RetryPolicy = RetryPolicy()
    quiet: bool = False


@dataclass
class CollectSummary:
    locations_csv: Path
    failed_csv: Path
    tiles: int = 0
    in_coverage: int = 0
    selected: int = 0
    downloaded: int = 0
    present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return self.downloaded + self.present


def image_file_name(image_id: str) -> str:
    return f"{image_id}.jpg"


def iso_time(milliseconds: int) -> str:
    """Milliseconds since the epoch → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC)."""
    moment = datetime.fromtimestamp(milliseconds // 1000, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{milliseconds % 1000:03d}Z"


def entity_fields(size: str) -> str:
    return ",".join(("id", f"thumb_{size}_url", "computed_geometry", "geometry", "compass_angle",
                     "computed_compass_angle", "captured_at", "is_pano", "sequence"))


def location_row(entity: dict, tile: CoverageImage) -> dict:
    """The locations.csv row for an image: the entity's values (computed ones first), else the tile's."""
    point = next((geometry["coordinates"] for geometry in (entity.get("computed_geometry"), entity.get("geometry"))
                  if isinstance(geometry, dict) and len(geometry.get("coordinates") or ()) >= 2), None)
    lon, lat = (float(point[0]), float(point[1])) if point else (tile.lon, tile.lat)
    angle = next((entity[key] for key in ("computed_compass_angle", "compass_angle") if entity.get(key) is not None),
                 tile.compass_angle)
    captured = entity.get("captured_at")
    pano = entity.get("is_pano")
    return {"image": image_file_name(tile.id), "lon": repr(lon), "lat": repr(lat),
            "angle": "" if angle is None else repr(float(angle)),
            "sequence": str(entity.get("sequence") or tile.sequence),
            "captured_at": iso_time(int(captured) if isinstance(captured, (int, float)) else tile.captured_at),
            "is_pano": str(bool(tile.is_pano if pano is None else pano)).lower()}


def locations_csv(rows: dict[str, dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, LOCATION_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows[name] for name in sorted(rows))
    return buffer.getvalue()


def read_location_rows(path: Path) -> dict[str, dict]:
    """Rows of an earlier run's locations.csv by image name (empty if there is none)."""
    if not path.exists():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {row["image"]: row for row in csv.DictReader(handle) if row.get("image")}
    except (OSError, UnicodeDecodeError, KeyError, csv.Error) as exc:
        raise PerceptError(f"cannot read {path} from an earlier run ({exc}): move it away to start afresh") from None


class MapillarySource:
    """Image entities over the Graph API client ``api``; coverage tiles and thumbnails over ``downloads``,
    which carries no Authorization header and, with an https API, refuses plain http (redirects too)."""

    def __init__(self, api: HttpFetcher, downloads: HttpFetcher, options: CollectOptions):
        self.api, self.downloads, self.options = api, downloads, options
        downloads.client.event_hooks = {"request": [self._refuse_plain_http], "response": []}

    def tile(self, xy: tuple[int, int]) -> list[CoverageImage]:
        x, y = xy
        url = f"{self.options.tiles_url.rstrip('/')}/{TILE_PATH.format(z=ZOOM, x=x, y=y)}"
        try:
            data = self.downloads.get(url, params={"access_token": self.options.token}).content
        except DownloadError as exc:
            if exc.status in NO_COVERAGE:
                return []
            self._check_token(exc)
            raise self._redacted(exc) from None
        try:
            return decode_image_tile(data, x, y)
        except ValueError as exc:
            raise DownloadError(str(exc)) from None

    def entity(self, image_id: str) -> dict:
        url = f"{self.options.api_url.rstrip('/')}/{image_id}"
        try:
            response = self.api.get(url, params={"fields": entity_fields(self.options.size)},
                                    headers={"Authorization": f"OAuth {self.options.token}"})
            entity = response.json()
        except DownloadError as exc:
            self._check_token(exc)
            raise self._redacted(DownloadError(f"image entity: {exc.reason}", exc.status)) from None
        except ValueError:
            raise DownloadError("image entity: the answer is not JSON") from None
        if not isinstance(entity, dict):
            raise DownloadError("image entity: the answer is not a JSON object")
        return entity

    def collect_one(self, image: CoverageImage, target: Path, needs_file: bool) -> dict:
        """The image's locations row, downloading its thumbnail first when ``needs_file``."""
        entity = self.entity(image.id)
        try:
            row = location_row(entity, image)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DownloadError(f"image entity: unreadable values ({exc})") from None
        if needs_file:
            self.thumbnail(image.id, entity, target)
        return row

    def thumbnail(self, image_id: str, entity: dict, target: Path) -> None:
        """Download the entity's thumbnail; an expired URL (403/410) is asked for again, up to REFETCHES times."""
        for refetch in range(REFETCHES + 1):
            url = entity.get(f"thumb_{self.options.size}_url")
            if not isinstance(url, str) or not url:
                raise DownloadError(f"the image has no thumb_{self.options.size}_url")
            try:
                self.downloads.download(url, target)
                return
            except DownloadError as exc:
                if exc.status not in EXPIRED or refetch == REFETCHES:
                    raise self._redacted(DownloadError(f"thumbnail: {exc.reason}", exc.status)) from None
            entity = self.entity(image_id)

    def _refuse_plain_http(self, request) -> None:
        if plain_http_refused(self.options.api_url, request.url):
            raise DownloadError(PLAIN_HTTP_REASON)

    def _redacted(self, exc: DownloadError) -> DownloadError:
        return DownloadError(redact(exc.reason, self.options.token), exc.status)

    def _check_token(self, exc: DownloadError) -> None:
        if exc.status == 401:
            raise PerceptError("Mapillary refused the access token (HTTP 401): check --mapillary-token "
                               "or MAPILLARY_TOKEN") from None


def collect(out_dir: str | Path, options: CollectOptions) -> CollectSummary:
    """Collect the selected images of the box into ``out_dir``; see the module docstring."""
    if options.size not in SIZES:
        raise PerceptError(f"thumbnail size must be one of {', '.join(SIZES)}, got {options.size!r}")
    folder, images_dir = Path(out_dir), Path(out_dir) / "images"
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PerceptError(f"cannot create output folder {images_dir}: {exc}") from None
    summary = CollectSummary(locations_csv=folder / "locations.csv", failed_csv=folder / "failed.csv")
    present = present_files(images_dir)
    rows = {name: row for name, row in read_location_rows(summary.locations_csv).items() if name in present}
    stop = threading.Event()
    try:
        with HttpFetcher(options.policy, options.connections, stop) as api, \
                HttpFetcher(options.policy, options.connections, stop) as downloads:
            source = MapillarySource(api, downloads, options)
            coverage = _coverage(source, options, stop, summary)
            chosen = select_images(coverage, options.selection)
            summary.in_coverage, summary.selected = len({image.id for image in coverage}), len(chosen)
            jobs = []
            for image in chosen:
                name = image_file_name(image.id)
                if name in present and name in rows:
                    summary.present += 1
                else:
                    jobs.append(image)
            remove_stale_temporaries(images_dir, {image_file_name(image.id) for image in chosen})
            _collect_images(source, jobs, images_dir, present, rows, options, stop, summary)
    finally:
        atomic_write_text(summary.locations_csv, locations_csv(rows))
        atomic_write_text(summary.failed_csv, failures_csv(summary.failed, FAILED_COLUMNS))
    return summary


def _coverage(source: MapillarySource, options: CollectOptions, stop: threading.Event,
              summary: CollectSummary) -> list[CoverageImage]:
    tiles = tiles_covering(options.selection.bbox)
    summary.tiles = len(tiles)
    found = []
    with tqdm(total=len(tiles), unit="tile", disable=options.quiet, leave=False) as bar:
        for (x, y), future in run_concurrently(tiles, source.tile, options.connections, stop):
            bar.update()
            try:
                found.extend(future.result())
            except DownloadError as exc:
                summary.failed.append((f"tile {ZOOM}/{x}/{y}", exc.reason))
    return found


def _collect_images(source: MapillarySource, jobs: list[CoverageImage], images_dir: Path, present: set[str],
                    rows: dict[str, dict], options: CollectOptions, stop: threading.Event,
                    summary: CollectSummary) -> None:
    def work(image: CoverageImage) -> dict:
        name = image_file_name(image.id)
        return source.collect_one(image, images_dir / name, needs_file=name not in present)

    with tqdm(total=len(jobs), unit="image", disable=options.quiet, leave=False) as bar:
        for done, (image, future) in enumerate(run_concurrently(jobs, work, options.connections, stop), 1):
            bar.update()
            try:
                row = future.result()
            except DownloadError as exc:
                summary.failed.append((image.id, exc.reason))
                continue
            except Stopped:
                continue
            if row["image"] in present:
                summary.present += 1
            else:
                summary.downloaded += 1
            rows[row["image"]] = row
            if done % SAVE_EVERY == 0:
                atomic_write_text(summary.locations_csv, locations_csv(rows))

