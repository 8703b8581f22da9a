"""Decode images for the web app within bounds: few threads, and few pixels in memory at once.

Headers are read on one thread of their own, so an image that breaks the limits is refused at
once, even while large images are being decoded. Decoding runs on at most ``workers`` threads,
and an image is decoded only while the pixels being decoded stay within ``pixel_budget`` (an
image larger than the budget is decoded alone), so parallel maximal uploads take turns instead
of holding several full-size images in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from PIL import Image

from percept.data.decode import ImageHeader, ImageLimits, Source, open_image, read_header
from percept.memory import release_free_memory

T = TypeVar("T")


class PixelBudget:
    """A counting semaphore over pixels; a request larger than the budget waits until it is alone."""

    def __init__(self, pixels: int):
        self.pixels, self.in_use = pixels, 0
        self.changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int):
        with self.changed:
            self.changed.wait_for(lambda: self.in_use == 0 or self.in_use + pixels <= self.pixels)
            self.in_use += pixels
        try:
            yield
        finally:
            with self.changed:
                self.in_use -= pixels
                self.changed.notify_all()


class BoundedDecoder:
    """Check headers and decode images (then run a function on them) on bounded thread pools."""

    def __init__(self, limits: ImageLimits, workers: int = 2, pixel_budget: int | None = None):
        self.limits = limits
        self.budget = PixelBudget(pixel_budget or limits.max_pixels)
        self.headers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="percept-header")
        self.workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="percept-decode")

    def header(self, source: Callable[[], Source], name: str) -> Future[ImageHeader]:
        """The image's header, refused when it breaks the limits (nothing is decoded)."""
        return self.headers.submit(lambda: read_header(source(), self.limits, name))

    def decode(self, source: Callable[[], Source], name: str, use: Callable[[Image.Image], T]) -> Future[T]:
        """``use(image)`` for the decoded, upright 8-bit RGB image."""

        def work() -> T:
            header = read_header(source(), self.limits, name)
            try:
                with self.budget.hold(header.pixels):
                    return use(open_image(source(), self.limits, name))
            finally:
                release_free_memory()

        return self.workers.submit(work)

    def shutdown(self) -> None:
        self.headers.shutdown(wait=False, cancel_futures=True)
        self.workers.shutdown(wait=False, cancel_futures=True)
