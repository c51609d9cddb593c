"""A driver's generator served to a client: how far it runs ahead of the call, and what it has ready.

The generator runs in a producer of its own (a thread for a sync generator, a task for an async one) and
hands items to the call through a buffer, so that the call can send whatever is ready in one message (to
clients that take batches) instead of one item per message. Before the producer asks the generator for
item number p it waits until p <= ``allowed``, which the call raises with ``allow()``:

- a paced call (our client, a method that declared ``@export(lookahead=N)``): the items the client has
  asked for, plus N. With N = 0 an item is produced only once the client asks for it;
- any other call: the items handed to gRPC, plus one (the item being sent), plus the lookahead. The
  client can't say what it took, and gRPC's buffers hold more on the way (see README, "Generators").

``take()`` waits only for the first item: a slow producer's item goes out at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("jumpstarter.exporter")

DEFAULT_LOOKAHEAD = 16  # items a generator that declared none runs ahead of what the call has sent
ITEM, ERROR, END = range(3)


class Producer:
    """Runs ``func(*args)``, a sync or async generator, ahead of the call by at most ``allowed`` items."""

    def __init__(self, func: Callable[..., Any], args: list[Any], is_async: bool, allowed: int, name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._entries: deque[tuple[int, Any]] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # a thread producer waits here for allow()
        self._room_waiter: asyncio.Future | None = None  # a task producer waits here for allow()
        self._taker: asyncio.Future | None = None  # take() waits here for an entry
        self._allowed = allowed
        self._produced = 0  # items the generator has been asked for
        self._closed = False
        self._task: asyncio.Task | None = None
        if is_async:
            self._task = self._loop.create_task(self._run_async(func, args), name=f"jumpstarter {name}")
        else:
            thread = threading.Thread(target=self._run_sync, args=(func, args), name=f"jumpstarter {name}")
            thread.daemon = True
            thread.start()

    # The call's side (on the event loop) ---------------------------------------------------------------

    async def take(self, most: int) -> list[tuple[int, Any]]:
        """Up to ``most`` entries (ITEM, ERROR or END, value), waiting only while there is none."""
        while True:
            with self._lock:
                if self._entries:
                    entries = self._entries
                    if len(entries) <= most:
                        self._entries = deque()
                        return list(entries)
                    return [entries.popleft() for _ in range(most)]
                self._taker = taker = self._loop.create_future()
            await taker

    def allow(self, allowed: int) -> None:
        """Let the generator produce items up to number ``allowed`` (counted from the call's start)."""
        with self._lock:
            if allowed <= self._allowed:
                return
            self._allowed = allowed
            self._room.notify()
            waiter, self._room_waiter = self._room_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def aclose(self) -> None:
        """The call has ended: the generator is closed where it stands (its ``finally`` runs)."""
        with self._lock:
            self._closed = True
            self._entries.clear()
            self._room.notify_all()
            waiter, self._room_waiter = self._room_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        task = self._task
        if task is not None and not task.done():
            if waiter is None:  # the generator is inside a step of its own (awaiting its device): stop it there
                task.cancel()
            await asyncio.wait({task})

    # The producer's side -------------------------------------------------------------------------------

    def _put(self, kind: int, value: Any = None) -> None:
        with self._lock:
            if self._closed:
                return
            self._entries.append((kind, value))
            taker, self._taker = self._taker, None
        if taker is None:
            return
        if self._task is not None:  # on the loop
            _wake(taker)
            return
        try:
            self._loop.call_soon_threadsafe(_wake, taker)
        except RuntimeError:
            pass  # the loop has closed: nobody takes this

    def _room_in_thread(self) -> bool:
        with self._room:
            while self._produced >= self._allowed and not self._closed:
                self._room.wait()
            if self._closed:
                return False
            self._produced += 1
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
                if self._produced < self._allowed:
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


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
