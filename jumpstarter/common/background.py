"""One event loop thread per process for background I/O that outlives any one client: in-process servers
(``serve()``) and lease sessions.

grpc.aio hands all of a process's completion events to the event loop that first used it, and forwards other
loops' events from there: one long-lived loop for these uses is the cheap place for them, and one that never
closes under the others.
"""

from __future__ import annotations

import atexit
import os
import threading

from anyio.from_thread import BlockingPortal, start_blocking_portal

_lock = threading.Lock()
_per_process: dict[int, BlockingPortal] = {}


def background_portal() -> BlockingPortal:
    """This process's background event loop, started on first use (again in a forked child: the parent's thread
    isn't there). It ends when the process exits, after what runs on it has."""
    with _lock:
        portal = _per_process.get(os.getpid())
        if portal is None:
            starter = start_blocking_portal()
            portal = _per_process[os.getpid()] = starter.__enter__()
            atexit.register(starter.__exit__, None, None, None)
        return portal
