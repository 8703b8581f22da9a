"""Decode images for the web app within bounds: few threads, few pixels in memory, small ones first.

Headers are checked on threads of their own, smallest file first, so an image that breaks the
limits is refused at once even while large images are decoded, and a slow header (a JPEG marker
followed by megabytes of junk that Pillow skips byte by byte) delays no small upload. Decoding runs
on at most ``workers`` threads, smallest image first, and an image starts only while the pixels
being decoded stay within ``pixel_budget`` (an image larger than the budget is decoded alone):
parallel maximal uploads take turns instead of holding several full-size images in memory, and a
small photo passes ahead of the large ones waiting for their share (one of at most a sixteenth of
the budget starts whenever a thread is free, even beside a maximal image). Pixels of wide modes
(alpha, 16-bit and float) count :data:`WIDE_WEIGHT` times, for the larger buffers their
conversion needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from PIL import Image

from percept.data.decode import ImageHeader, ImageLimits, Source, open_image, read_header
from percept.memory import release_free_memory
from percept.web.pools import PriorityPool

T = TypeVar("T")

HEADER_WORKERS = 2
#: A pixel of these modes costs about three 8-bit RGB pixels of memory while it is converted.
WIDE_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
WIDE_WEIGHT = 3
#: Images of at most this share of the pixel budget are decoded whenever a thread is free.
LIGHT_SHARE = 16
#: Decodes at least this heavy hand their freed memory back to the system when they end.
TRIM_WEIGHT = 4_000_000


def decode_weight(header: ImageHeader) -> int:
    """What decoding an image holds of the pixel budget: its pixels, more for wide modes."""
    return header.pixels * (WIDE_WEIGHT if header.mode in WIDE_MODES else 1)


def default_budget(limits: ImageLimits) -> int:
    """One maximal 8-bit image and a quarter as much again, so small images decode beside it."""
    return limits.max_pixels + limits.max_pixels // 4


class BoundedDecoder:
    """Check headers and decode images (then run a function on them) on bounded, smallest-first pools."""

    def __init__(self, limits: ImageLimits, workers: int = 2, pixel_budget: int | None = None):
        self.limits = limits
        self.headers = PriorityPool(HEADER_WORKERS, "percept-header")
        budget = pixel_budget or default_budget(limits)
        self.workers = PriorityPool(workers, "percept-decode", budget=budget, light=budget // LIGHT_SHARE)
        self.workers.on_idle = self.release_memory_soon
        self._trim_pending = threading.Lock()

    def decode(self, source: Callable[[], Source], name: str, use: Callable[[Image.Image], T],
               size: int = 0) -> Future[T]:
        """``use(image)`` for the decoded, upright 8-bit RGB image; ``size`` (bytes) orders the header checks.

        The header is checked first (nothing is decoded for an image that breaks the limits), then the
        image waits for its share of the pixel budget."""
        result: Future[T] = Future()

        def decode(header: ImageHeader) -> T:
            try:
                return use(open_image(source(), self.limits, name))
            finally:
                if decode_weight(header) >= TRIM_WEIGHT:
                    release_free_memory()

        def header_done(checked: Future[ImageHeader]) -> None:
            if checked.cancelled() or checked.exception() is not None:
                return pass_on(checked, result)
            header = checked.result()
            try:
                job = self.workers.submit(lambda: decode(header), size=header.pixels, weight=decode_weight(header))
            except RuntimeError as exc:  # shut down meanwhile
                return result.set_exception(exc)
            job.add_done_callback(lambda done: pass_on(done, result))

        self.headers.submit(lambda: read_header(source(), self.limits, name), size=size).add_done_callback(header_done)
        return result

    def release_memory_soon(self) -> None:
        """Hand freed memory back to the system on a header thread (once, however often asked meanwhile)."""
        if not self._trim_pending.acquire(blocking=False):
            return

        def trim() -> None:
            try:
                release_free_memory()
            finally:
                self._trim_pending.release()

        try:
            self.headers.submit(trim, size=float("inf"))
        except RuntimeError:
            self._trim_pending.release()

    def shutdown(self) -> None:
        self.headers.shutdown()
        self.workers.shutdown()


def pass_on(done: Future, result: Future) -> None:
    """Give ``result`` the outcome of the finished future ``done``."""
    if done.cancelled():
        result.cancel()
    elif done.exception() is not None:
        result.set_exception(done.exception())
    else:
        result.set_result(done.result())
