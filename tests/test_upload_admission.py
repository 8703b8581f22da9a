"""The upload gate (places, memory, the queue, dropping silent uploads), the body pace, the memory-mapped
upload bytes and reading a body at a pace, each on its own."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image
from starlette.requests import Request

from percept.web.admission import Busy, UploadGate
from percept.web.bodies import MappedBody
from percept.web.upload import BodyPace, UploadRefused, read_upload


def run(coroutine):
    return asyncio.run(coroutine)


def test_places_then_a_queue_then_busy():
    async def scenario():
        gate = UploadGate(max_receiving=2, max_bytes=10**6, idle_drop=60, patience=0.2, max_waiting=1)
        first, second = await gate.admit(100), await gate.admit(100)
        waiting = asyncio.ensure_future(gate.admit(100))
        await asyncio.sleep(0)
        with pytest.raises(Busy):  # the queue (one place) is taken by an upload as large
            await gate.admit(100)
        first.received()  # its body is complete: the place goes to the one waiting
        third = await waiting
        assert gate.receiving == {second, third}
        with pytest.raises(Busy):  # nothing comes free within the patience
            await gate.admit(100)
        for ticket in (first, second, third):
            ticket.close()
        assert gate.tickets == set() and gate.held == 0

    run(scenario())


def test_the_smallest_waiting_upload_goes_first_and_pushes_the_largest_out_of_a_full_queue():
    async def scenario():
        gate = UploadGate(max_receiving=1, max_bytes=10**6, idle_drop=60, patience=5, max_waiting=2)
        holder = await gate.admit(10)
        large = asyncio.ensure_future(gate.admit(9_000_000))
        medium = asyncio.ensure_future(gate.admit(3_000_000))
        await asyncio.sleep(0)
        small = asyncio.ensure_future(gate.admit(20_000))  # the queue is full: the largest leaves it
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await large
        holder.close()
        first = await small
        assert not medium.done()
        first.close()
        (await medium).close()

    run(scenario())


def test_uploads_within_a_megabyte_go_in_order_of_arrival():
    async def scenario():
        gate = UploadGate(max_receiving=1, max_bytes=10**6, idle_drop=60, patience=5)
        holder = await gate.admit(10)
        order = []

        async def upload(name, size):
            ticket = await gate.admit(size)
            order.append(name)
            ticket.close()

        waiting = [asyncio.ensure_future(upload(name, size))
                   for name, size in (("2 MB", 2_000_000), ("900 kB", 900_000), ("20 kB", 20_000))]
        await asyncio.sleep(0)
        holder.close()
        await asyncio.gather(*waiting)
        assert order == ["900 kB", "20 kB", "2 MB"]

    run(scenario())


def test_a_silent_upload_is_dropped_for_a_waiting_one_but_a_sending_or_unread_one_is_not():
    async def scenario():
        gate = UploadGate(max_receiving=3, max_bytes=10**6, idle_drop=0.05, patience=5)
        silent, sending, unread = await gate.admit(100), await gate.admit(100), await gate.admit(100)
        await silent.take(50)
        silent.listen()  # its reader waits for bytes that never come
        waiting = asyncio.ensure_future(gate.admit(100))
        for _ in range(500):  # keeps sending until the waiting upload is admitted (or gives up)
            if waiting.done():
                break
            sending.listen()
            await asyncio.sleep(0.01)
            sending.heard()
            await sending.take(1)
        newcomer = await waiting
        assert silent.dropped.done() and silent.closed
        assert not sending.dropped.done() and not unread.dropped.done()  # the server has not read this one yet
        assert gate.receiving == {sending, unread, newcomer} and gate.held == sending.bytes
        for ticket in (sending, unread, newcomer):
            ticket.close()

    run(scenario())


def test_memory_is_shared_and_given_back():
    async def scenario():
        emptied = []
        gate = UploadGate(max_receiving=4, max_bytes=1000, idle_drop=60, patience=5)
        gate.on_empty = lambda: emptied.append(True)
        first, second = await gate.admit(None), await gate.admit(None)
        await first.take(800)
        first.received()  # complete, waiting for its answer: its bytes stay counted
        more = asyncio.ensure_future(second.take(300))
        await asyncio.sleep(0)
        assert not more.done() and gate.held == 800
        first.close()
        await more
        assert gate.held == 300 and emptied == []
        second.close()
        assert gate.held == 0 and emptied == [True]

    run(scenario())


def test_memory_that_never_comes_free_refuses_the_upload():
    async def scenario():
        gate = UploadGate(max_receiving=4, max_bytes=1000, idle_drop=60, patience=0.1)
        holder, late = await gate.admit(None), await gate.admit(None)
        await holder.take(1000)
        holder.received()
        with pytest.raises(Busy):
            await late.take(1)

    run(scenario())


@pytest.mark.parametrize("last,received,expected", [
    (0.0, 0, 1.0),           # nothing yet: the first bytes within the grace
    (0.5, 16 * 1024, 2.0),   # 16 kB in: the average rate allows one more second than the grace
    (3.5, 10 * 16 * 1024, 8.5),  # on pace: only the silence since the last bytes counts
    (10.0, 10**6, 15.0),
])
def test_body_pace(last, received, expected):
    pace = BodyPace(timeout=5.0, min_rate=16 * 1024, grace=1.0)
    assert pace.next_deadline(0.0, last, received) == pytest.approx(expected)


def test_mapped_body_reads_back_and_hands_its_memory_back():
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(out, "PNG")
    data = out.getvalue()
    body = MappedBody(1 << 20)
    for start in range(0, len(data), 7):
        body.append(data[start:start + 7])
    assert body.size == len(data) and body.open().read() == data
    with Image.open(body.open()) as image:
        assert image.size == (40, 30) and image.getpixel((0, 0)) == (200, 10, 10)
    still_open = body.open()
    body.close()  # closes the readers it gave out
    assert body.map.closed and still_open.closed
    with pytest.raises(ValueError):
        MappedBody(4).append(b"12345")


def form_request(pieces, gap: float, silent_after: int | None = None) -> Request:
    """A multipart request whose body comes in ``pieces``, ``gap`` seconds apart, and nothing more after
    ``silent_after`` pieces."""
    messages, sent = list(pieces), 0

    async def receive():
        nonlocal sent
        if silent_after is not None and sent >= silent_after:
            await asyncio.Event().wait()
        await asyncio.sleep(gap)
        sent += 1
        body = messages.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(messages)}

    scope = {"type": "http", "method": "POST", "path": "/api/score", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=b")]}
    return Request(scope, receive)


HEAD = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'


@pytest.mark.parametrize("gap,silent_after,pace", [
    (0.05, None, BodyPace(timeout=5, min_rate=10**6, grace=0.2)),  # steady but slower than the least rate
    (0.0, 1, BodyPace(timeout=0.2, min_rate=1)),                     # silent after its first piece
])
def test_a_slow_body_is_refused_with_408(gap, silent_after, pace):
    pieces = [HEAD] + [b"\0" * 100] * 100 + [b"\r\n--b--\r\n"]

    async def scenario():
        with pytest.raises(UploadRefused) as refused:
            await read_upload(form_request(pieces, gap, silent_after), "image", 10**6, pace)
        return refused.value

    refused = run(scenario())
    assert refused.status == 408 and "too slowly" in str(refused)


def test_a_body_at_pace_is_read_and_counted_on_its_ticket():
    pieces = [HEAD, b"\1" * 1000, b"\2" * 1000, b"\r\n--b--\r\n"]

    async def scenario():
        gate = UploadGate(max_receiving=1, max_bytes=10**6)
        upload = await read_upload(form_request(pieces, 0.01), "image", 10**6, BodyPace(timeout=5), gate)
        assert upload.open().read() == b"\1" * 1000 + b"\2" * 1000
        assert gate.receiving == set() and gate.held == upload.received == sum(map(len, pieces))
        upload.close()
        assert gate.held == 0 and upload.body.map.closed

    run(scenario())
