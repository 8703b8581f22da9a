"""read_ahead: items in order, made ahead on a thread, errors where they belong, and a clean early stop."""

from __future__ import annotations

import threading
import time

import pytest

from percept.read_ahead import read_ahead


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
