"""Run a driver's sync code off the event loop, with as few thread switches as possible.

``run_in_worker``: a sync method runs in a pooled worker thread that hands the
result straight to the waiting coroutine (one wake-up each way; measurably
leaner than an executor future chained to an asyncio future).

(Generators run in exporter/generators.py: a thread of their own each, not a worker per item.)
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

# Seconds a worker thread waits for another call before it ends: a burst of concurrent blocking calls leaves no
# threads behind for good.
WORKER_IDLE = 10.0


class _Workers:
    """Daemon threads that run calls for coroutines; one more is started whenever all are busy, and one that has
    had nothing to do for WORKER_IDLE seconds ends."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a job that no submit() has counted on yet

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
            try:
                loop, future, func, args = self._jobs.get(timeout=WORKER_IDLE)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # no job is on its way to an idle worker: this one may go
                        self._idle -= 1
                        return
                continue  # a submit() counted on an idle worker: its job is coming
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
