"""``serve()``: a driver served in-process over real gRPC, for tests and mocks (above the client and the
exporter, which it joins; upstream's import path, ``jumpstarter.common.utils``, re-exports it)."""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from anyio.from_thread import BlockingPortal

from jumpstarter.client.base import DriverClient
from jumpstarter.client.tree import connect
from jumpstarter.common.background import background_portal
from jumpstarter.driver.base import Driver, close_drivers
from jumpstarter.exporter.server import serving

if TYPE_CHECKING:
    from jumpstarter.config.hooks import Hooks

__all__ = ["serve"]

log = logging.getLogger("jumpstarter.exporter")


@contextmanager
def serve(root: Driver, *, passphrase: str | None = None, hooks: Hooks | None = None) -> Iterator[DriverClient]:
    """Serve ``root`` on a private unix socket from a background event loop; yield its client.

    Calls take the same path as against a real exporter (gRPC, protobuf
    values), so serialization is exercised. The drivers are closed on exit.
    ``hooks``: an ExporterConfig's beforeLease/afterLease (a failed one whose onFailure is exit can't stop
    this process: it refuses every lease from then on, saying why).
    """
    # The client classes of drivers handed to us in-process are not network input: trust them.
    trusted = frozenset(driver.client() for _, _, _, driver in root.enumerate())
    portal, folder = _shared()
    socket = f"unix://{folder / f'exporter-{next(_serial)}.sock'}"
    holders = None
    if hooks:
        from jumpstarter.exporter.holders import Holders

        holders = Holders(
            hooks, lambda why: log.error("%s: this in-process exporter takes no more leases", why), tidy_at_stop=False
        )
    server = serving(root, socket, passphrase=passphrase, holders=holders)
    try:
        address = portal.call(server.__aenter__)
    except BaseException:
        _close(root)
        raise
    try:
        with connect(address, passphrase=passphrase, trusted=trusted) as client:
            yield client
    finally:
        # The client is gone, so no call is in flight: the server stops on the shared loop while this thread
        # goes on (a mocked test doesn't wait the ~1.5 ms of its stop; the loop's exit at process end waits).
        portal.start_task_soon(server.__aexit__, None, None, None)
        _close(root)


# One event loop thread and one socket folder for all of a process's serve() uses: a mocked test pays
# for neither (about 1 ms of a use's 6). Each use's server ends with the use.
_lock = threading.Lock()
_serial = itertools.count()
_folders: dict[int, Path] = {}


def _shared() -> tuple[BlockingPortal, Path]:
    """This process's background event loop and private socket folder, made on first use (again in a forked
    child)."""
    with _lock:
        if os.getpid() not in _folders:
            folder = tempfile.TemporaryDirectory(prefix="jumpstarter-")  # private (0700), removed at exit
            atexit.register(folder.cleanup)
            _folders[os.getpid()] = Path(folder.name)
        return background_portal(), _folders[os.getpid()]


def _close(root: Driver) -> None:
    """Close every driver; one failing to close is logged, not raised over the test's own outcome."""
    close_drivers(root)
