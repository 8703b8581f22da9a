"""Admission of uploads: how many bodies are received at once, and how many body bytes are held.

Every upload holds a :class:`Ticket` from its admission to its answer. While its body is being
received it holds one of ``max_receiving`` places; until its answer its bytes count against
``max_bytes``. When either is full, an upload waits (at most ``patience`` seconds, then it is
refused as busy: 503, try again later). Uploads already admitted that wait for memory are served
first, then newcomers by their declared size in whole megabytes (within a megabyte, in order of
arrival), so ordinary photos pass the large bodies of an attack. At most ``max_waiting``
newcomers wait (by default four per place); a smaller one takes the place in the queue of the
largest.

A place or memory held by an upload whose reader has waited ``idle_drop`` seconds for its next
bytes (:meth:`Ticket.listen`) is given to a waiting one: the silent upload is dropped (its reader
is told through ``Ticket.dropped``). A working client sends continuously, so stalled uploads hold
the server only while nobody else needs it, and never more than ``max_bytes`` of memory; an upload
the server itself holds up (not yet read, or waiting for memory) is never taken for silent.

Runs on the event loop's thread only (no locks); bookkeeping only, no I/O.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass


class Busy(Exception):
    """No place or memory came free in time for this upload."""


class Dropped(Exception):
    """The upload's place was given to another upload while it sent nothing."""


class Ticket:
    """One upload's place: its bytes, since when its reader has waited for more, and whether it was dropped."""

    def __init__(self, gate: UploadGate):
        self.gate = gate
        self.bytes = 0
        self.listening_since: float | None = None  # when its reader began waiting for the next bytes
        self.receiving = True
        self.closed = False
        self.dropped: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def take(self, count: int) -> None:
        """Count ``count`` more body bytes, waiting for memory if need be (raises :class:`Busy` when
        none comes free in time, :class:`Dropped` when this upload has lost its place)."""
        if self.closed:
            raise Dropped
        await self.gate._reserve(self, count)
        self.bytes += count

    def listen(self) -> None:
        """Its reader waits for the body's next bytes (from now on the upload may be taken for silent)."""
        self.listening_since = self.gate.clock()

    def heard(self) -> None:
        """Its reader has the next bytes (or has stopped waiting)."""
        self.listening_since = None

    def received(self) -> None:
        """The body is complete: give up the receiving place (the bytes stay counted)."""
        if self.receiving:
            self.receiving = False
            self.gate.receiving.discard(self)
            self.gate._serve()

    def close(self) -> None:
        """The upload is answered (or dropped): give everything back."""
        if self.closed:
            return
        self.closed = True
        self.receiving = False
        self.gate.receiving.discard(self)
        self.gate.tickets.discard(self)
        self.gate.held -= self.bytes
        self.bytes = 0
        self.gate._serve()
        if not self.gate.tickets and self.gate.on_empty is not None:
            self.gate.on_empty()

    def _drop(self) -> None:
        if not self.dropped.done():
            self.dropped.set_result(None)
        self.close()


#: Newcomers declaring sizes within the same megabyte are served in order of arrival.
SIZE_CLASS = 1024 * 1024


@dataclass(eq=False)
class Waiter:
    """An upload waiting for a place (``ticket`` None, ``amount`` its declared size) or, admitted,
    for ``amount`` bytes of memory."""

    amount: int
    ticket: Ticket | None
    order: int
    granted: asyncio.Future

    @property
    def rank(self) -> tuple:
        """Admitted ones first, in order; then newcomers by size class, in order."""
        return (0, self.order) if self.ticket is not None else (1, self.amount // SIZE_CLASS, self.order)


class UploadGate:
    """Places for uploads being received, a cap on the body bytes all uploads hold, and a queue."""

    def __init__(self, max_receiving: int, max_bytes: int, idle_drop: float = 0.5, patience: float = 5.0,
                 max_waiting: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.max_receiving, self.max_bytes = max_receiving, max_bytes
        self.idle_drop, self.patience, self.clock = idle_drop, patience, clock
        self.max_waiting = 4 * max_receiving if max_waiting is None else max_waiting
        self.receiving: set[Ticket] = set()
        self.tickets: set[Ticket] = set()
        self.held = 0
        self.waiters: list[Waiter] = []
        self.on_empty: Callable[[], None] | None = None
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._serving = False

    async def admit(self, declared: int | None) -> Ticket:
        """A ticket for a new upload declaring ``declared`` body bytes (None: unknown, counted as large);
        raises :class:`Busy` when no place comes free within ``patience`` seconds."""
        if not self.waiters and len(self.receiving) < self.max_receiving:
            return self._new_ticket()
        waiter = self._waiter(declared if declared is not None else self.max_bytes, None)
        newcomers = [w for w in self.waiters if w.ticket is None]
        if len(newcomers) >= self.max_waiting:
            largest = max(newcomers, key=lambda w: w.rank)
            if largest.rank < waiter.rank:
                raise Busy("every upload place is taken and the queue is full")
            self._refuse(largest)
        return await self._wait(waiter)

    def _waiter(self, amount: int, ticket: Ticket | None) -> Waiter:
        return Waiter(amount, ticket, next(self._order), asyncio.get_running_loop().create_future())

    async def _reserve(self, ticket: Ticket, count: int) -> None:
        if not any(w.ticket is not None for w in self.waiters) and self.held + count <= self.max_bytes:
            self.held += count
            return
        await self._wait(self._waiter(count, ticket))

    async def _wait(self, waiter: Waiter):
        self.waiters.append(waiter)
        self._serve()
        watched = {waiter.granted} if waiter.ticket is None else {waiter.granted, waiter.ticket.dropped}
        await asyncio.wait(watched, timeout=self.patience, return_when=asyncio.FIRST_COMPLETED)
        if waiter.granted.done() and not waiter.granted.cancelled():
            return waiter.granted.result()
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        if waiter.ticket is not None and waiter.ticket.closed:
            raise Dropped
        raise Busy("no upload place or memory came free in time")

    def _refuse(self, waiter: Waiter) -> None:
        self.waiters.remove(waiter)
        waiter.granted.cancel()


    def _new_ticket(self) -> Ticket:
        ticket = Ticket(self)
        self.receiving.add(ticket)
        self.tickets.add(ticket)
        return ticket

    def _fits(self, waiter: Waiter) -> bool:
        if waiter.ticket is None:
            return len(self.receiving) < self.max_receiving
        return self.held + waiter.amount <= self.max_bytes

    def _serve(self) -> None:
        """Serve waiters in turn while there is room or a silent upload to drop for them."""
        if self._serving:  # a drop below closes a ticket, which asks again: the loop here goes on anyway
            return
        self._serving = True
        try:
            self._serve_waiters()
        finally:
            self._serving = False

    def _serve_waiters(self) -> None:
        self.waiters = [w for w in self.waiters
                        if not w.granted.done() and not (w.ticket is not None and w.ticket.closed)]
        while self.waiters:
            head = min(self.waiters, key=lambda w: w.rank)
            while not self._fits(head) and self._drop_idlest(head.ticket):
                pass
            if not self._fits(head):
                return self._serve_again_when_one_is_silent(head)
            self.waiters.remove(head)
            if head.ticket is None:
                head.granted.set_result(self._new_ticket())
            else:
                self.held += head.amount
                head.granted.set_result(None)

    def _droppable(self, keep: Ticket | None) -> list[tuple[float, Ticket]]:
        """The receiving uploads waiting for their next bytes (but ``keep``), each with since when."""
        return [(t.listening_since, t) for t in self.receiving if t is not keep and t.listening_since is not None]

    def _drop_idlest(self, keep: Ticket | None) -> bool:
        """Drop the receiving upload silent longest, if silent at least ``idle_drop``; whether one was."""
        now = self.clock()
        idle = [(since, t) for since, t in self._droppable(keep) if now - since >= self.idle_drop]
        if not idle:
            return False
        min(idle, key=lambda waiting: waiting[0])[1]._drop()
        return True

    def _serve_again_when_one_is_silent(self, head: Waiter) -> None:
        """Wake the queue when the receiving upload silent longest reaches ``idle_drop``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        candidates = self._droppable(head.ticket)
        if candidates:
            due = min(since for since, _ in candidates) + self.idle_drop - self.clock()
            self._timer = asyncio.get_running_loop().call_later(max(due, 0.01), self._serve)
