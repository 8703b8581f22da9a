"""Overlap a producer with its consumer: the next item is made on a thread while the current one is used."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

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


def map_ahead(function: Callable[[T], R], items: Iterable[T], threads: int = 2, *,
              name: str = "percept-map-ahead") -> Iterator[R]:
    """``function(item)`` of each item, in order, ``threads`` of them made at once on threads of their own (called
    ``name``), and no further ahead: while the caller holds one result, the next ``threads`` are being made.

    Each call may wait on others (a worker pool that several calls share, say): with several under way, one
    call's waiting is another's working time. Items are taken from ``items`` on the caller's thread. An
    exception raised by a call is raised here, where its result would have come; a consumer that stops early
    stops the calls not yet begun and waits for those running.
    """
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix=name)
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _wait(room: threading.Semaphore, stop: threading.Event) -> bool:
    """Take a place for the next item once there is one; False if the consumer stopped first."""
    while not stop.is_set():
        if room.acquire(timeout=0.1):
            return True
    return False
