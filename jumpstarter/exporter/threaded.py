"""Run a driver's sync code off the event loop, with as few thread switches as possible.

``run_in_worker``: a sync method runs in a pooled worker thread that hands the
result straight to the waiting coroutine (one wake-up each way; measurably
leaner than an executor future chained to an asyncio future).

``iterate_in_thread``: a sync generator runs in a thread of its own instead of
one thread hop per item; the loop wakes only when it is waiting for an item,
and the generator runs at most ``LOOKAHEAD`` items ahead of what the call sent.
Once that far ahead, it sleeps until half of them are taken, not after each one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

LOOKAHEAD = 16
_ITEM, _ERROR, _END = range(3)


class _Workers:
    """Daemon threads that run calls for coroutines; one more is started whenever all are busy."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job: tuple) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        if start:
            threading.Thread(target=self._work, name="jumpstarter worker", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            loop, future, func, args = self._jobs.get()
            outcome: tuple[Any, BaseException | None]
            try:
                outcome = (func(*args), None)
            except BaseException as exc:
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:
                pass  # the loop has closed: nobody waits for this result
            del loop, future, func, args, outcome
            with self._lock:
                self._idle += 1


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():
        return  # the call was cancelled meanwhile
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


_workers = _Workers()


async def run_in_worker(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` in a worker thread; the event loop stays free meanwhile."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    _workers.submit((loop, future, func, args))
    return await future


class _Handoff:
    """A bounded buffer from one producer thread to one consumer on an event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop, self._limit = loop, limit
        self._entries: deque[tuple[int, Any]] = deque()
        self._cond = threading.Condition()
        self._waiter: asyncio.Future | None = None
        self._cancelled = False

    def put(self, kind: int, value: Any = None) -> bool:
        """Producer side: block while full; False once the consumer has gone."""
        with self._cond:
            while len(self._entries) >= self._limit and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                return False
            self._entries.append((kind, value))
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)
        return True

    async def get(self) -> tuple[int, Any]:
        while True:
            with self._cond:
                if self._entries:
                    entry = self._entries.popleft()
                    if len(self._entries) <= self._limit // 2:  # a full producer resumes at half: fewer switches
                        self._cond.notify()
                    return entry
                self._waiter = waiter = self._loop.create_future()
            await waiter

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _produce(func: Callable[..., Any], args: list[Any], handoff: _Handoff) -> None:
    try:
        generator = func(*args)
        try:
            for item in generator:
                if not handoff.put(_ITEM, item):
                    return
        finally:
            generator.close()
    except BaseException as exc:  # delivered to the caller, raised there
        handoff.put(_ERROR, exc)
    else:
        handoff.put(_END)


async def iterate_in_thread(func: Callable[..., Any], args: list[Any], name: str = "") -> AsyncGenerator[Any, None]:
    """The items of ``func(*args)``, a sync generator, produced in a new thread."""
    handoff = _Handoff(asyncio.get_running_loop(), LOOKAHEAD)
    thread = threading.Thread(target=_produce, args=(func, args, handoff), name=f"jumpstarter {name}", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await handoff.get()
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return
    finally:
        handoff.cancel()
