"""Overlap a producer with its consumer: the next item is made on a thread while the current one is used."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

T = TypeVar("T")

_END = object()


def read_ahead(items: Iterator[T], depth: int = 1, *,
               context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
               name: str = "percept-read-ahead") -> Iterator[T]:
    """The items of ``items`` in order, at most ``depth`` of them made (or being made) ahead on a thread
    (called ``name``), which makes them all inside ``context()`` (a CUDA stream, say).

    With ``depth=1`` the next item is made while the caller holds the current one, and no further: two
    items are alive at once. An exception raised while making an item is raised here, where that item
    would have come. A consumer that stops early (``close()``, an exception, garbage collection) stops the
    thread once its current item is made.
    """
    ready: queue.Queue = queue.Queue()
    room = threading.Semaphore(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            with context():
                while _wait(room, stop):
                    try:
                        item = next(items)
                    except StopIteration:
                        ready.put((_END, None))
                        return
                    ready.put((item, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put((_END, exc))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            room.release()  # the next one may be made while this one is used
            yield item
    finally:
        stop.set()
        thread.join()


def _wait(room: threading.Semaphore, stop: threading.Event) -> bool:
    """Take a place for the next item once there is one; False if the consumer stopped first."""
    while not stop.is_set():
        if room.acquire(timeout=0.1):
            return True
    return False
