"""HTTP for collecting images: retries with exponential back-off, and atomic downloads checked to be images.

One implementation for ``percept fetch-images`` and ``percept collect``. Timeouts, dropped
connections, 408, 429 and 5xx answers are tried again after a growing, jittered pause (at least
the server's Retry-After; see ``percept.city.retry``); any other answer fails at once. A download
streams into a temporary file beside its target, must decode as an image, and only then is
renamed into place, so a file under its final name is always whole (temporary files that a killed
run left behind are removed by the next run). Setting the ``stop`` event ends waits and downloads.
"""

from __future__ import annotations

import csv
import io
import random
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TypeVar

import httpx
from PIL import Image, UnidentifiedImageError

from percept.atomic import atomic_path
from percept.city.retry import RetryPolicy, backoff_delay, parse_retry_after, retryable

CHUNK_BYTES = 64 * 1024
#: The retries a fetcher makes unless told otherwise (frozen: one instance serves every fetcher).
DEFAULT_POLICY = RetryPolicy()

Item = TypeVar("Item")


class DownloadError(Exception):
    """A request that failed for good: ``reason`` is one line, ``status`` the HTTP status if there was one."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Stopped(Exception):
    """The run was interrupted: the request was abandoned and nothing was written."""


class _TryAgain(Exception):
    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def check_image(path: Path, content_type: str | None = None) -> None:
    """Raise DownloadError unless the file decodes completely as an image (JPEGs decode at 1/8 scale)."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(image.width // 8, 1), max(image.height // 8, 1)))
            image.load()
    except UnidentifiedImageError:
        raise DownloadError(f"not an image (content type {content_type or 'not given'})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DownloadError(f"broken or truncated image ({exc})") from None


def _transport_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection broke off ({exc})"
    return f"connection failed ({type(exc).__name__}: {exc})"


class HttpFetcher:
    """A pooled HTTP client (safe to share between threads) that retries and downloads atomically."""

    def __init__(self, policy: RetryPolicy = DEFAULT_POLICY, connections: int = 8,
                 stop: threading.Event | None = None, user_agent: str = "percept"):
        self.policy = policy
        self.stop = stop or threading.Event()
        self.client = httpx.Client(
            timeout=policy.timeout, follow_redirects=True, headers={"User-Agent": user_agent},
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))

    def __enter__(self) -> HttpFetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()

    def get(self, url: str, params: dict | None = None, headers: dict | None = None) -> httpx.Response:
        """A successful (2xx) response with its body read; DownloadError (with status) for any other outcome."""
        def attempt() -> httpx.Response:
            response = self.client.get(url, params=params, headers=headers)
            self._check_status(response)
            return response

        return self._with_retries(attempt)

    def download(self, url: str, target: Path, params: dict | None = None) -> int:
        """Save the image at ``url`` as ``target`` (atomically, checked to decode); returns its size in bytes."""
        def attempt() -> int:
            with self.client.stream("GET", url, params=params) as response:
                self._check_status(response)
                with atomic_path(target) as tmp:
                    size = 0
                    with open(tmp, "wb") as handle:
                        for chunk in response.iter_bytes(CHUNK_BYTES):
                            if self.stop.is_set():
                                raise Stopped()
                            handle.write(chunk)
                            size += len(chunk)
                    check_image(tmp, response.headers.get("content-type"))
                return size

        return self._with_retries(attempt)

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if retryable(status):
            raise _TryAgain(f"HTTP {status}", status, parse_retry_after(response.headers.get("retry-after")))
        raise DownloadError(f"HTTP {status}", status)

    def _with_retries(self, attempt: Callable[[], Item]) -> Item:
        for failures in range(1, self.policy.tries + 1):
            if self.stop.is_set():
                raise Stopped()
            try:
                return attempt()
            except _TryAgain as exc:
                reason, retry_after, status = exc.reason, exc.retry_after, exc.status
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.TooManyRedirects) as exc:
                raise DownloadError(f"cannot fetch this URL ({exc})") from None
            except httpx.TransportError as exc:
                reason, retry_after, status = _transport_reason(exc), None, None
            if failures == self.policy.tries:
                break
            pause = backoff_delay(self.policy, failures, retry_after, random.uniform(0.5, 1.0))
            if self.stop.wait(pause):
                raise Stopped()
        tries = "once" if self.policy.tries == 1 else f"{self.policy.tries} times"
        raise DownloadError(f"{reason} (tried {tries})", status)


def run_concurrently(items: Iterable[Item], work: Callable[[Item], object], workers: int,
                     stop: threading.Event) -> Iterator[tuple[Item, Future]]:
    """Run ``work`` on every item in ``workers`` threads; yield (item, finished future) as each ends.

    If the consumer stops early (an exception, Ctrl-C), ``stop`` is set, waiting items are dropped
    and running ones end at their next check of ``stop``.
    """
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(work, item): item for item in items}
        for future in as_completed(futures):
            yield futures[future], future
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def failures_csv(rows: list[tuple[str, str]], columns: tuple[str, str]) -> str:
    """CSV text with a header (e.g. url, reason) and one row per failure."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def remove_stale_temporaries(folder: Path, names: set[str]) -> int:
    """Delete temporary files that an interrupted run left beside the images it was writing."""
    pattern = re.compile(r"^\.(.+)\.[^.]+\.tmp$")
    removed = 0
    for path in folder.glob(".*.tmp"):
        match = pattern.match(path.name)
        if match and match.group(1) in names and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def present_files(folder: Path) -> set[str]:
    """Names of the non-empty files in the folder (every file there was written whole, by renaming)."""
    return {entry.name for entry in folder.iterdir() if entry.is_file() and entry.stat().st_size > 0}
