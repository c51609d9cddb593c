"""Sync generators run in a thread of their own: every item, in order, never far ahead of the reader."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jumpstarter.exporter import threaded


@pytest.mark.parametrize("lookahead", [1, 2, 3, 16])
def test_items_arrive_in_order_and_the_producer_stays_within_the_lookahead(monkeypatch, lookahead):
    monkeypatch.setattr(threaded, "LOOKAHEAD", lookahead)
    produced = 0
    lock = threading.Lock()

    def numbers(n):
        nonlocal produced
        for i in range(n):
            with lock:
                produced += 1
            yield i

    async def read() -> tuple[list[int], int]:
        got, furthest = [], 0
        async for item in threaded.iterate_in_thread(numbers, [500], "numbers"):
            got.append(item)
            await asyncio.sleep(0)  # let the producer run ahead as far as it may
            with lock:
                furthest = max(furthest, produced - len(got))
        return got, furthest

    got, furthest = asyncio.run(asyncio.wait_for(read(), 30))
    assert got == list(range(500))
    assert furthest <= lookahead + 1  # the buffer, plus the one item waiting to be put
