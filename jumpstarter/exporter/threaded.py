"""Run a driver's sync code off the event loop, with as few thread switches as possible.

``run_in_worker``: a sync method runs in a pooled worker thread that hands the
result straight to the waiting coroutine (one wake-up each way; measurably
leaner than an executor future chained to an asyncio future).

(Generators run in exporter/generators.py: a thread of their own each, not a worker per item.)
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("jumpstarter.exporter")

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

    def submit(self, job: _Job) -> None:
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
                job = self._jobs.get(timeout=WORKER_IDLE)
                loop, future, func, args = job.loop, job.future, job.func, job.args
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
            job.finished = True
            try:
                loop.call_soon_threadsafe(_settle, job, *outcome)
            except RuntimeError:
                pass  # the loop has closed: nobody waits for this result
            del job, loop, future, func, args, outcome
            with self._lock:
                self._idle += 1


class _Job:
    """A call for a worker: ``finished`` once the worker has run it; ``straggling`` while it runs on after its
    caller gave up, in that registry."""

    __slots__ = ("args", "finished", "func", "future", "loop", "straggling", "what")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future, func: Callable[..., Any], args: tuple):
        self.loop, self.future, self.func, self.args = loop, future, func, args
        self.finished = False
        self.straggling: Stragglers | None = None
        self.what = ""


class Straggler(Protocol):
    """A sync call (a worker's job, a generator's thread) that may run on after its caller gave up."""

    what: str  # its name in the log (``power.cycle``)
    straggling: Stragglers | None  # the registry it is in, once its caller gave up


class Stragglers:
    """An exporter's sync calls whose caller gave up (its client's deadline passed, or it went away) while their
    thread runs on (a worker's call; a generator's step): a thread can't be stopped, so the board is still busy
    with them. On the event loop."""

    def __init__(self) -> None:
        self.running: dict[Straggler, float] = {}  # -> since when (time.time())
        self.on_end: list[Callable[[], None]] = []  # told when the last one ends
        self.holder: Callable[[], str] = lambda: ""  # who holds the board now (the leases'), for the log

    def oldest(self) -> tuple[str, float] | None:
        """The longest running straggler: what it runs (``power.cycle``), since when its caller gave up."""
        if not self.running:
            return None
        job = min(self.running, key=self.running.__getitem__)
        return job.what, self.running[job]

    def add(self, job: Straggler) -> None:
        """``job``'s caller gave up while its thread runs on: the board is busy until ``ended(job)``."""
        job.straggling = self
        self.running[job] = time.time()
        holder = self.holder()
        log.warning(
            "%s%s goes on running after its caller gave up: the board is busy until it returns",
            job.what,
            f" (called under the lease of {holder})" if holder else "",
        )

    def ended(self, job: Straggler) -> None:
        """``job``'s thread has returned (on the loop)."""
        since = self.running.pop(job, None)
        if since is not None:
            log.info("%s returned, %.1f s after its caller gave up", job.what, time.time() - since)
        if not self.running:
            for callback in self.on_end:
                callback()


def _settle(job: _Job, result: Any, exc: BaseException | None) -> None:
    future = job.future
    if job.straggling is not None:
        job.straggling.ended(job)
    if future.done():
        return  # the call was cancelled meanwhile
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


_workers = _Workers()


async def run_in_worker(
    func: Callable[..., Any], *args: Any, stragglers: Stragglers | None = None, what: str = ""
) -> Any:
    """``func(*args)`` in a worker thread; the event loop stays free meanwhile. If the caller gives up (is
    cancelled) while the thread runs on, the call is in ``stragglers`` until it returns (``what``: its name)."""
    loop = asyncio.get_running_loop()
    job = _Job(loop, loop.create_future(), func, args)
    _workers.submit(job)
    try:
        return await job.future
    except asyncio.CancelledError:
        if stragglers is not None and not job.finished:
            job.what = what or getattr(func, "__qualname__", "a call")
            stragglers.add(job)
        raise
