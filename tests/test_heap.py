"""bot/heap.py: `serve` freezes its start-up heap and collects cycles less often, still
collecting them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bot.heap import SERVE_THRESHOLDS, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_the_thresholds_raised() -> None:
    kept = [object() for _ in range(3)]  # alive at start-up, like the bot's own objects
    gc.unfreeze()
    settle_heap()
    assert gc.get_threshold() == SERVE_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert kept


@pytest.mark.usefixtures("restored_gc")
def test_a_cycle_made_after_start_up_is_still_collected() -> None:
    settle_heap()

    class Node:
        other: Node

    first, second = Node(), Node()
    first.other, second.other = second, first
    watched = weakref.ref(first)
    del first, second
    assert watched() is not None  # a cycle: reference counting alone never frees it
    gc.collect()
    assert watched() is None
