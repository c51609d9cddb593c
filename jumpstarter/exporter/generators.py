"""A driver's generator served to a client: how far it runs ahead of the call, and what it has ready.

The generator runs in a producer of its own (a thread for a sync generator, a task for an async one) and
hands items to the call through a buffer, so that the call can send whatever is ready in one message (to
clients that take batches) instead of one item per message. Before the producer asks the generator for
item number p it waits until p <= ``allowed``, which the call raises with ``allow()``:

- a paced call (our client, a method that declared ``@export(lookahead=N)``): the items the client has
  asked for, plus N. With N = 0 an item is produced only once the client asks for it;
- any other call: the items handed to gRPC, plus one (the item being sent), plus the lookahead. The
  client can't say what it took, and gRPC's buffers hold more on the way (see docs/drivers.md, "Generators").

Whatever the call allows, the producer holds at most ``BUFFER_ITEMS`` items or ``BUFFER_BYTES`` bytes that
it has produced and the call hasn't handed to gRPC yet (an item bigger than that goes alone): a client that
asks for everything and reads nothing can't make the exporter buffer without bound. The call stops the
producer when it ends, however it ends (``close()``). A sync generator's thread can't be stopped inside a step:
a call that ends while its thread is in the driver's code puts the producer in the exporter's stragglers
(exporter/threaded.py), and the board goes to no one until that step returns.

``take()`` waits only for the first item: a slow producer's item goes out at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from jumpstarter.exporter.threaded import Stragglers

log = logging.getLogger("jumpstarter.exporter")

DEFAULT_LOOKAHEAD = 16  # items a generator that declared none runs ahead of what the call has sent
ITEM, ERROR, END = range(3)
# Produced and not yet handed to gRPC, at most (four batches of small items; four of 256 KiB).
BUFFER_ITEMS = 1024
BUFFER_BYTES = 1024 * 1024
# A paced call's client may ask for at most this many items beyond those sent (our client asks for one more
# than it has taken). It is refused beyond: a client asking for 2**64 items is broken, not eager.
MAX_ASK_AHEAD = 1 << 20


class AskedTooMuch(ValueError):
    """A paced call's client asked for more than MAX_ASK_AHEAD items beyond those it was sent."""


class Producer:
    """Runs ``func(*args)``, a sync or async generator, ahead of the call by at most ``allowed`` items."""

    def __init__(
        self,
        func: Callable[..., Any],
        args: list[Any],
        is_async: bool,
        allowed: int,
        name: str,
        stragglers: Stragglers | None = None,
    ) -> None:
        self.what = name  # a straggler's (see ``close()``)
        self.straggling: Stragglers | None = None
        self._stragglers = stragglers
        self._in_step = False  # a thread producer is in the driver's code, asked for an item
        self._loop = asyncio.get_running_loop()
        self._entries: deque[tuple[int, Any, int]] = deque()  # (ITEM, ERROR or END; value; its weight())
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # a thread producer waits here for allow()
        self._room_waiter: asyncio.Future | None = None  # a task producer waits here for allow()
        self._taker: asyncio.Future | None = None  # take() waits here for an entry
        self._allowed = allowed
        self._produced = 0  # items the generator has been asked for
        self._queued_bytes = 0  # the weight() of the entries
        self._lent = 0  # the entries take() last returned, handed on once it is called again
        self._lent_bytes = 0  # their weight()
        self._closed = False
        self._task: asyncio.Task | None = None
        if is_async:
            self._task = self._loop.create_task(self._run_async(func, args), name=f"jumpstarter {name}")
        else:
            thread = threading.Thread(target=self._run_sync, args=(func, args), name=f"jumpstarter {name}")
            thread.daemon = True
            thread.start()

    # The call's side (on the event loop) ---------------------------------------------------------------

    async def take(self, most: int) -> list[tuple[int, Any, int]]:
        """Up to ``most`` entries (ITEM, ERROR or END, value, weight), waiting only while there is none. Calling
        it again says that the entries it returned before have been handed on: the producer may replace them."""
        while True:
            with self._lock:
                if self._lent:
                    full = not self._buffer_room()
                    self._lent = self._lent_bytes = 0
                    if full:  # the producer may be waiting for room
                        self._wake_producer()
                entries = self._entries
                if entries:
                    if len(entries) <= most:
                        self._entries = deque()
                        self._lent, self._lent_bytes, self._queued_bytes = len(entries), self._queued_bytes, 0
                        return list(entries)
                    taken = [entries.popleft() for _ in range(most)]
                    size = sum(entry[2] for entry in taken)
                    self._lent, self._lent_bytes = most, size
                    self._queued_bytes -= size
                    return taken
                self._taker = taker = self._loop.create_future()
            await taker

    def allow(self, allowed: int) -> None:
        """Let the generator produce items up to number ``allowed`` (counted from the call's start)."""
        with self._lock:
            if allowed <= self._allowed:
                return
            self._allowed = allowed
            self._wake_producer()

    def refuse(self, error: Exception) -> None:
        """End the call with ``error`` (after the items ready), and the generator with it."""
        with self._lock:
            if self._closed:
                return
            self._entries.append((ERROR, error, 0))
            taker, self._taker = self._taker, None
        if taker is not None:
            _wake(taker)
        self.close(drop=False)

    def close(self, drop: bool = True) -> None:
        """The call has ended: stop the generator where it stands (its ``finally`` runs), and ``drop`` what it
        made. On the event loop; ``aclose()`` waits for an async generator's ``finally`` too."""
        with self._lock:
            self._closed = True
            if drop:
                self._entries.clear()
            if self._in_step and self._stragglers is not None and self.straggling is None:
                self._stragglers.add(self)  # the board is busy until the step returns (``_put``)
            self._room.notify_all()
            waiter, self._room_waiter = self._room_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        task = self._task
        if task is not None and not task.done() and waiter is None:
            task.cancel()  # the generator is inside a step of its own (awaiting its device): stop it there

    async def aclose(self) -> None:
        """``close()``, and wait for an async generator to finish closing."""
        self.close()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task})

    # The producer's side -------------------------------------------------------------------------------

    def _put(self, kind: int, value: Any = None) -> None:
        size = 0 if kind != ITEM else 8 if type(value) is int else weight(value)
        with self._lock:
            straggling = self.straggling if self._in_step else None
            self._in_step = False
            if straggling is not None:  # a step that ran on after the call ended has returned
                self._tell_loop(straggling.ended, self)
            if self._closed:
                return
            self._entries.append((kind, value, size))
            self._queued_bytes += size
            taker, self._taker = self._taker, None
        if taker is None:
            return
        if self._task is not None:  # on the loop
            _wake(taker)
            return
        self._tell_loop(_wake, taker)

    def _tell_loop(self, func: Callable[..., Any], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(func, *args)
        except RuntimeError:
            pass  # the loop has closed: nobody waits for this

    def _room_for_one(self) -> bool:
        """Whether the generator may produce its next item (under the lock)."""
        return self._produced < self._allowed and self._buffer_room()

    def _buffer_room(self) -> bool:
        """Whether the items produced and not handed on leave room for one more (under the lock)."""
        return len(self._entries) + self._lent < BUFFER_ITEMS and self._queued_bytes + self._lent_bytes < BUFFER_BYTES

    def _wake_producer(self) -> None:
        """(Under the lock.)"""
        self._room.notify()
        waiter, self._room_waiter = self._room_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _room_in_thread(self) -> bool:
        with self._room:
            while not self._room_for_one() and not self._closed:
                self._room.wait()
            if self._closed:
                return False
            self._produced += 1
            self._in_step = True
            return True

    def _run_sync(self, func: Callable[..., Any], args: list[Any]) -> None:
        try:
            generator = func(*args)
            try:
                while self._room_in_thread():
                    try:
                        item = next(generator)
                    except StopIteration:
                        break
                    self._put(ITEM, item)
                else:
                    return  # the call has ended
            finally:
                generator.close()
        except BaseException as exc:  # delivered to the call, which reports it to the client
            self._put(ERROR, exc)
        else:
            self._put(END)

    async def _room_in_task(self) -> bool:
        while True:
            with self._lock:
                if self._closed:
                    return False
                if self._room_for_one():
                    self._produced += 1
                    return True
                self._room_waiter = waiter = self._loop.create_future()
            await waiter

    async def _run_async(self, func: Callable[..., Any], args: list[Any]) -> None:
        agen = None
        try:
            agen = func(*args)
            while await self._room_in_task():
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    self._put(END)
                    return
                self._put(ITEM, item)
        except asyncio.CancelledError:
            pass  # the call has ended
        except Exception as exc:  # delivered to the call, which reports it to the client
            self._put(ERROR, exc)
        finally:
            if agen is not None:
                try:
                    await agen.aclose()
                except Exception as exc:
                    log.error("closing the generator %s failed: %s", getattr(func, "__qualname__", func), exc)


_SMALL = (int, float, bool, type(None))


def weight(value: Any, depth: int = 0) -> int:
    """About the bytes ``value`` takes on the wire: its text and bytes, 8 a number (for BUFFER_BYTES)."""
    kind = type(value)
    if kind in _SMALL:
        return 8
    if kind is str or kind is bytes or kind is bytearray:
        return len(value) + 8
    if depth > 33:  # deeper than values travel (values.MAX_DEPTH): the call fails on it anyway
        return 8
    if kind is list or kind is tuple:
        return 8 + sum(weight(item, depth + 1) for item in value)
    if kind is dict:
        return 8 + sum(len(key) + weight(item, depth + 1) for key, item in value.items() if type(key) is str)
    return sys.getsizeof(value)  # a dataclass or model: its plain data is weighed no further


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
