"""read_ahead and map_ahead: items in order, made ahead on threads, errors where they belong, and a clean early stop."""

from __future__ import annotations

import threading
import time

import pytest

from percept.read_ahead import map_ahead, read_ahead


def recorded(made: list, count: int):
    """0, 1, ... count - 1, each noted in ``made`` as it is made."""
    for i in range(count):
        made.append(i)
        yield i


def test_items_come_in_order_and_are_made_ahead():
    made = []
    ahead = read_ahead(recorded(made, 5))
    assert next(ahead) == 0
    deadline = time.monotonic() + 5
    while len(made) < 2 and time.monotonic() < deadline:  # the next item is made while the caller holds this one
        time.sleep(0.01)
    assert made[:2] == [0, 1]
    assert list(ahead) == [1, 2, 3, 4]


def test_an_error_is_raised_where_its_item_would_come():
    def items():
        yield 1
        yield 2
        raise ValueError("row 3 is broken")

    ahead = read_ahead(items())
    assert [next(ahead), next(ahead)] == [1, 2]
    with pytest.raises(ValueError, match="row 3 is broken"):
        next(ahead)


def test_stopping_early_ends_the_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    ahead = read_ahead(endless())
    assert next(ahead) == 0
    ahead.close()
    assert threading.active_count() == before


def test_no_more_than_depth_items_are_made_ahead():
    made = []
    ahead = read_ahead(recorded(made, 10), depth=1)
    assert next(ahead) == 0
    time.sleep(0.3)  # time enough to make several more, were it allowed
    assert made == [0, 1]
    assert list(ahead) == list(range(1, 10))


def test_map_ahead_gives_results_in_order_with_calls_running_at_once():
    both = threading.Barrier(2, timeout=5)  # each of the first two calls waits for the other: they must overlap

    def square(i: int) -> int:
        if i < 2:
            both.wait()
        time.sleep(0.01 * (5 - i))  # later items finish first
        return i * i

    assert list(map_ahead(square, range(6), threads=2)) == [0, 1, 4, 9, 16, 25]


def test_map_ahead_takes_no_more_items_than_it_needs():
    taken = []
    results = map_ahead(lambda i: i, recorded(taken, 20), threads=2)
    assert next(results) == 0
    time.sleep(0.2)
    assert taken == [0, 1, 2]  # the one held, and the two being made
    assert list(results) == list(range(1, 20))


def test_map_ahead_raises_a_call_error_where_its_result_would_come():
    def check(i: int) -> int:
        if i == 3:
            raise ValueError("chunk 3 is broken")
        return i

    results = map_ahead(check, range(6))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="chunk 3 is broken"):
        next(results)


def test_map_ahead_stopped_early_runs_no_further_calls_and_ends_its_threads():
    called = []

    def note(i: int) -> int:
        called.append(i)
        return i

    before = threading.active_count()
    results = map_ahead(note, range(100), threads=2)
    assert next(results) == 0
    results.close()
    assert len(called) <= 3
    assert threading.active_count() == before
