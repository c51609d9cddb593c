"""Short-lived listeners that serve a handler, for drivers that bridge a client stream to a local port or socket.

Each accepted connection is handed to ``handler(stream)`` in its own task; the handler owns the stream and
should close it. A handler that raises stops the listener, as upstream's does. Leaving the ``async with``
stops serving, cancels the handlers still running and closes the listener.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from socket import AddressFamily
from typing import Any, Literal, cast

from anyio import create_task_group, create_tcp_listener, create_unix_listener
from anyio.abc import Listener, SocketAttribute
from anyio.lowlevel import checkpoint

__all__ = ["TemporarySocket", "TemporaryTcpListener", "TemporaryUnixListener"]

Handler = Callable[[Any], Awaitable[Any]]
# The address families anyio's create_tcp_listener() takes.
TcpFamily = Literal[AddressFamily.AF_UNSPEC, AddressFamily.AF_INET, AddressFamily.AF_INET6]


def _runtime_dir() -> str | None:
    """$XDG_RUNTIME_DIR when it names an absolute path (the XDG spec ignores relative ones), else None."""
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    return value if os.path.isabs(value) else None


@contextmanager
def TemporarySocket() -> Iterator[Path]:
    """A path for a unix socket in a fresh private folder, removed with its contents on exit.

    The folder comes from ``tempfile.mkdtemp`` (mode 0700, so other users can't reach the socket), under
    $XDG_RUNTIME_DIR when set and the temp dir otherwise. Nothing is created at the returned path itself.
    """
    folder = tempfile.mkdtemp(prefix="jumpstarter-", dir=_runtime_dir())
    try:
        yield Path(folder) / "socket"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@asynccontextmanager
async def _serving(listener: Listener[Any], handler: Handler) -> AsyncIterator[None]:
    """Serve ``handler`` on ``listener`` while the body runs.

    An error in the body comes out in an ExceptionGroup, as upstream's listeners raise it (drivers' tests expect so).
    """
    async with create_task_group() as tg:
        tg.start_soon(listener.serve, handler, tg)
        try:
            yield
            # Let readiness callbacks already queued (a peer that just hung up) reach their handlers before these
            # are cancelled: anyio's raw unix streams on asyncio report InvalidStateError when both come together.
            await checkpoint()
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def TemporaryUnixListener(
    handler: Handler, path: str | os.PathLike[str] | None = None
) -> AsyncIterator[str | os.PathLike[str]]:
    """Serve ``handler`` on a unix socket and yield its path: ``path`` if given, else one from TemporarySocket()."""
    with nullcontext(path) if path is not None else TemporarySocket() as where:
        async with await create_unix_listener(where) as listener, _serving(listener, handler):
            yield where


@asynccontextmanager
async def TemporaryTcpListener(
    handler: Handler,
    local_host: str = "127.0.0.1",
    local_port: int = 0,
    family: TcpFamily = AddressFamily.AF_UNSPEC,
    backlog: int = 65536,
    reuse_port: bool = True,
) -> AsyncIterator[tuple[str, int]]:
    """Serve ``handler`` on a TCP port (by default a free one on loopback) and yield its ``(host, port)``."""
    listener = await create_tcp_listener(
        local_host=local_host, local_port=local_port, family=family, backlog=backlog, reuse_port=reuse_port
    )
    async with listener, _serving(listener, handler):
        # An IP socket's address: anyio gives it as (host, port), for IPv6 too (a str is a unix socket's).
        yield cast(tuple[str, int], listener.extra(SocketAttribute.local_address))
