"""A pool of worker threads that runs the smallest waiting job first, within a weight budget.

Jobs carry a ``size`` (which job goes first: the smallest) and a ``weight`` (what they hold while
running, e.g. decoded pixels). A job starts only while the running jobs' weights and its own stay
within the budget, or when no other weighed job runs (a job heavier than the whole budget runs
alone). Light jobs (of at most ``light`` weight) are not weighed: they start whenever a thread is
free. Small jobs therefore pass ahead of large ones that wait for their share; a weighed job that
has waited longer than ``patience`` seconds is served before any other weighed job, so none waits
forever.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(order=True)
class Job:
    size: float
    order: int
    weight: float = field(compare=False)
    since: float = field(compare=False)
    run: Callable[[], object] = field(compare=False)
    future: Future = field(compare=False)


def next_job(waiting: list[Job], in_use: float, budget: float | None, now: float, patience: float,
             light: float = 0) -> Job | None:
    """The job to start now beside running weighed jobs of weight ``in_use`` (pure): a light job or
    the weighed job that has waited past ``patience`` if any, else the smallest job that fits; None
    when nothing may start."""

    def fits(job: Job) -> bool:
        return budget is None or job.weight <= light or in_use == 0 or in_use + job.weight <= budget

    weighed = [job for job in waiting if job.weight > light]
    oldest = min(weighed, key=lambda job: job.order, default=None)
    if oldest is not None and now - oldest.since > patience:
        candidates = [job for job in waiting if job.weight <= light or job is oldest]
    else:
        candidates = waiting
    return min((job for job in candidates if fits(job)), default=None)


class PriorityPool:
    """``workers`` threads running submitted jobs smallest first within ``budget`` (None: no budget)."""

    def __init__(self, workers: int, name: str, budget: float | None = None, patience: float = 2.0,
                 light: float = 0):
        self.budget, self.patience, self.light = budget, patience, light
        self.waiting: list[Job] = []
        self.in_use = 0.0
        self.running = 0
        self.closed = False
        self.changed = threading.Condition()
        self.on_idle: Callable[[], None] | None = None
        self._order = itertools.count()
        self.threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self.threads:
            thread.start()

    def submit(self, run: Callable[[], T], size: float = 0, weight: float = 0) -> Future[T]:
        future: Future[T] = Future()
        with self.changed:
            if self.closed:
                raise RuntimeError("the pool is shut down")
            self.waiting.append(Job(size, next(self._order), weight, time.monotonic(), run, future))
            self.changed.notify_all()
        return future

    def weighed(self, job: Job) -> float:
        """What a running job holds of the budget (light jobs: nothing)."""
        return 0 if job.weight <= self.light else job.weight

    def _take(self) -> Job | None:
        with self.changed:
            while True:
                if self.closed:
                    return None
                now = time.monotonic()
                job = next_job(self.waiting, self.in_use, self.budget, now, self.patience, self.light)
                if job is not None:
                    self.waiting.remove(job)
                    self.in_use += self.weighed(job)
                    self.running += 1
                    return job
                oldest = min((j.since for j in self.waiting), default=None)
                # wake when the oldest job's patience runs out, or when a job ends or arrives
                self.changed.wait(None if oldest is None else max(0.01, oldest + self.patience - now + 0.01))

    def _work(self) -> None:
        while (job := self._take()) is not None:
            if job.future.set_running_or_notify_cancel():
                try:
                    job.future.set_result(job.run())
                except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                    job.future.set_exception(exc)
            with self.changed:
                self.in_use -= self.weighed(job)
                self.running -= 1
                idle = self.running == 0 and not self.waiting
                self.changed.notify_all()
            if idle and self.on_idle is not None:
                self.on_idle()

    def shutdown(self) -> None:
        """Cancel waiting jobs and let the threads end once their running job is done."""
        with self.changed:
            self.closed = True
            for job in self.waiting:
                job.future.cancel()
            self.waiting.clear()
            self.changed.notify_all()
