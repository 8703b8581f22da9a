"""Download the images a survey GeoJSON points to, each under the file name the model matches it by.

A feature's ``url`` gives the image; its file name is the URL's last segment (as the survey reader
names images). Files already in the folder are skipped, so a rerun (after failures or an
interruption) fetches only what is missing; files that fail go to a CSV (url, reason).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
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
from percept.city.retry import RetryPolicy
from percept.data.geojson import read_collection
from percept.data.survey import image_name
from percept.errors import PerceptError


@dataclass(frozen=True)
class FetchTask:
    url: str
    name: str


@dataclass(frozen=True)
class FetchPlan:
    """What to download, what is already there, and URLs that cannot be saved (url, reason)."""

    tasks: list[FetchTask]
    present: list[str]
    rejected: list[tuple[str, str]]


@dataclass(frozen=True)
class FetchOptions:
    connections: int = 8
    policy: RetryPolicy = RetryPolicy()
    failed_csv: Path | None = None
    quiet: bool = False


@dataclass
class FetchSummary:
    failed_csv: Path
    downloaded: int = 0
    present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def usable(self) -> int:
        """Images in the folder for this survey after the run."""
        return self.downloaded + self.present


def read_image_urls(path: str | Path) -> list[str]:
    """The ``url`` of every feature of a survey GeoJSON, in order."""
    features = read_collection(path, "survey GeoJSON", "give the data.geojson to fetch images for",
                             "give the survey's data.geojson")["features"]
    urls = []
    for number, feature in enumerate(features):
        props = feature.get("properties") if isinstance(feature, dict) else None
        url = props.get("url") if isinstance(props, dict) else None
        if not isinstance(url, str) or not url.strip():
            raise PerceptError(f"survey GeoJSON {path}: feature {number} has no 'url' property naming its image")
        urls.append(url.strip())
    if not urls:
        raise PerceptError(f"survey GeoJSON {path} has no features: nothing to fetch")
    return urls


def plan_fetch(urls: list[str], present: set[str]) -> FetchPlan:
    """One task per distinct URL whose file name is not in ``present``; a name claimed by two URLs goes to the first."""
    tasks, done, rejected = [], [], []
    owner: dict[str, str] = {}
    for url in urls:
        name = image_name(url)
        if owner.get(name) == url:
            continue
        if name in ("", ".", "..") or not url.lower().startswith(("http://", "https://")):
            rejected.append((url, "not an http(s) URL ending in a file name"))
            continue
        if name in owner:
            rejected.append((url, f"file name {name} is also that of {owner[name]}"))
            continue
        owner[name] = url
        if name in present:
            done.append(name)
        else:
            tasks.append(FetchTask(url, name))
    return FetchPlan(tasks, done, rejected)


def fetch_images(urls: list[str], out_dir: str | Path, options: FetchOptions = FetchOptions()) -> FetchSummary:
    """Download every URL's image into ``out_dir``, skipping files already there; write the failures CSV."""
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PerceptError(f"cannot create image folder {folder}: {exc}") from None
    remove_stale_temporaries(folder, {image_name(url) for url in urls})
    plan = plan_fetch(urls, present_files(folder))
    summary = FetchSummary(present=len(plan.present), failed=list(plan.rejected),
                           failed_csv=options.failed_csv or folder / "failed.csv")
    stop = threading.Event()
    try:
        with HttpFetcher(options.policy, options.connections, stop) as fetcher, \
                tqdm(total=len(plan.tasks), unit="image", disable=options.quiet, leave=False) as bar:
            work = lambda task: fetcher.download(task.url, folder / task.name)  # noqa: E731
            for task, future in run_concurrently(plan.tasks, work, options.connections, stop):
                bar.update()
                try:
                    future.result()
                    summary.downloaded += 1
                except DownloadError as exc:
                    summary.failed.append((task.url, exc.reason))
                except Stopped:
                    pass
    finally:
        atomic_write_text(summary.failed_csv, failures_csv(summary.failed, ("url", "reason")))
    return summary
