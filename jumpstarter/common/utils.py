"""``serve()``: a driver served in-process over real gRPC, for tests and mocks."""

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
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from jumpstarter.client.base import DriverClient
from jumpstarter.client.tree import connect
from jumpstarter.driver.base import Driver
from jumpstarter.exporter.server import serving
from jumpstarter.utils.env import env

__all__ = ["env", "serve"]

log = logging.getLogger("jumpstarter.exporter")


@contextmanager
def serve(root: Driver, *, passphrase: str | None = None) -> Iterator[DriverClient]:
    """Serve ``root`` on a private unix socket from a background event loop; yield its client.

    Calls take the same path as against a real exporter (gRPC, protobuf
    values), so serialization is exercised. The drivers are closed on exit.
    """
    # The client classes of drivers handed to us in-process are not network input: trust them.
    trusted = frozenset(driver.client() for _, _, _, driver in root.enumerate())
    socket = f"unix://{_socket_folder() / f'exporter-{next(_serial)}.sock'}"
    try:
        with _loop().wrap_async_context_manager(serving(root, socket, passphrase=passphrase)) as address:
            with connect(address, passphrase=passphrase, trusted=trusted) as client:
                yield client
    finally:
        _close(root)


# One event loop thread and one socket folder for all of a process's serve() uses: a mocked test pays
# for neither (about 1 ms of a use's 6). Each use's server ends with the use.
_lock = threading.Lock()
_serial = itertools.count()
_shared: dict[str, Any] = {}


def _loop() -> BlockingPortal:
    with _lock:
        if _shared.get("pid") != os.getpid():  # new, or a forked child: the parent's thread isn't here
            starter = start_blocking_portal()
            _shared.update(pid=os.getpid(), portal=starter.__enter__())
            atexit.register(starter.__exit__, None, None, None)
        return _shared["portal"]


def _socket_folder() -> Path:
    with _lock:
        if _shared.get("folder_pid") != os.getpid():
            folder = tempfile.TemporaryDirectory(prefix="jumpstarter-")
            _shared.update(folder_pid=os.getpid(), folder=folder)
        return Path(_shared["folder"].name)


def _close(root: Driver) -> None:
    """Close the drivers; a driver failing to close is logged, not raised over the test's own outcome."""
    try:
        root.close()
    except Exception as exc:
        log.error("closing %s failed: %s", type(root).__qualname__, exc, exc_info=exc)
