"""``serve()``: a driver served in-process over real gRPC, for tests and mocks."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anyio.from_thread import start_blocking_portal

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
    with tempfile.TemporaryDirectory(prefix="jumpstarter-") as tmp:
        socket = f"unix://{Path(tmp) / 'exporter.sock'}"
        try:
            with start_blocking_portal() as portal:
                with portal.wrap_async_context_manager(serving(root, socket, passphrase=passphrase)) as address:
                    with connect(address, passphrase=passphrase, trusted=trusted) as client:
                        yield client
        finally:
            _close(root)


def _close(root: Driver) -> None:
    """Close the drivers; a driver failing to close is logged, not raised over the test's own outcome."""
    try:
        root.close()
    except Exception as exc:
        log.error("closing %s failed: %s", type(root).__qualname__, exc, exc_info=exc)
