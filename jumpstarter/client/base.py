"""The client side of a driver: a ``DriverClient`` subclass calling exported methods by name."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Generator, Iterator
from contextlib import AbstractAsyncContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast, overload
from uuid import uuid4

from anyio.from_thread import BlockingPortal

from jumpstarter.client.connection import Connection
from jumpstarter.client.streams import AsyncStream, BlockingStream
from jumpstarter.common.hints import did_you_mean
from jumpstarter.common.wire import CLIENT_LABEL
from jumpstarter.errors import ClientClassError
from jumpstarter.v1.common_pb2 import LOG_SOURCE_AFTER_LEASE_HOOK, LOG_SOURCE_BEFORE_LEASE_HOOK, LOG_SOURCE_DRIVER


class NotConnected:
    """The connection of a client built by hand: using it says so, instead of failing on None."""

    def __getattr__(self, name: str) -> Any:
        raise ConnectionError(
            "this client was built by hand, without an exporter connection; use the clients that serve(), "
            "connect() or the pytest plugin's fixtures give (or patch the client's call methods in a unit test)"
        )

    def close(self) -> None:
        pass


def _not_connected() -> Connection:
    """The default ``DriverClient.connection``: typed as the Connection it stands in for, so that client code
    type-checks as it runs once connected; any use of it raises."""
    return cast(Connection, NotConnected())


class _Portal:
    """``DriverClient.portal``: an event loop for using the async API from blocking code, as upstream's clients
    have it. A keyword argument and assignable, as upstream's field is (tests pass or patch it); unset or set to
    None, it is the connection's own, started when first used. (The dataclass field's default is this descriptor
    itself, which ``__init__`` assigns when no portal is given: that means unset.)"""

    key = "_portal"

    @overload
    def __get__(self, client: None, owner: type | None = None) -> _Portal: ...
    @overload
    def __get__(self, client: DriverClient, owner: type | None = None) -> BlockingPortal: ...
    def __get__(self, client: DriverClient | None, owner: type | None = None) -> BlockingPortal | _Portal:
        if client is None:
            return self
        return client.__dict__.get(self.key) or client.connection.portal()

    def __set__(self, client: DriverClient, portal: BlockingPortal | None) -> None:
        if portal is None or portal is self:
            client.__dict__.pop(self.key, None)
        else:
            client.__dict__[self.key] = portal

    def __delete__(self, client: DriverClient) -> None:
        client.__dict__.pop(self.key, None)


_PORTAL = _Portal()


@dataclass(kw_only=True)
class DriverClient:
    """Base of every client class.

    ``call``/``streamingcall``/``stream`` reach the driver's exported methods
    by name; the ``*_async`` twins do the same from async code. Children of
    the driver are attributes of the client (``client.power.on()``).
    """

    # Only ``name`` shows in a client's repr (``PowerClient(name='dut.power')``): assertion lines in a failing
    # test's report stay short. Subclasses declared with @dataclass get the same, plus their own fields.
    uuid: str = field(default_factory=lambda: str(uuid4()), repr=False)
    labels: dict[str, str] = field(default_factory=dict, repr=False)
    children: dict[str, DriverClient] = field(default_factory=dict, repr=False)
    # serve(), connect() and the plugin give every client its exporter's connection; a client built by hand
    # (upstream's tests build them with mocks: ``Client(stub=..., portal=..., stack=...)``) has none.
    connection: Connection = field(default_factory=_not_connected, repr=False, compare=False)
    name: str = ""  # dotted path from the root, e.g. "custom.power"; "" for the root
    description: str | None = field(default=None, repr=False)  # the driver's, from the exporter's report
    methods_description: dict[str, str] = field(default_factory=dict, repr=False)  # help per method, likewise
    # Context managers entered for this client's lifetime (upstream's name): closed by close().
    stack: ExitStack = field(default_factory=ExitStack, repr=False, compare=False)
    # A descriptor-typed field: ``portal=`` takes a BlockingPortal or None, ``client.portal`` is a BlockingPortal.
    portal: _Portal = field(default=_PORTAL, repr=False, compare=False)
    stub: Any = field(default=None, repr=False, compare=False)  # upstream's gRPC stub: accepted, unused here

    def __post_init__(self) -> None:
        pass  # so that subclasses may call super().__post_init__()

    @cached_property
    def logger(self) -> logging.Logger:
        """A logger named after the client class, as upstream's clients have."""
        return logging.getLogger(type(self).__name__)

    def __getattr__(self, name: str) -> Any:  # a child: its client class is known only at run time
        children = self.__dict__.get("children")
        if children is None or name.startswith("__"):
            raise AttributeError(name)
        try:
            return children[name]
        except KeyError:
            pass
        known = sorted(children)
        hint = did_you_mean(name, known)
        what = f"client {self.name!r}" if self.name else "the exporter"
        listing = ", ".join(known) or "none"
        raise AttributeError(f"{what} ({type(self).__name__}) has no child {name!r}; its children: {listing}{hint}")

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.children})

    # Calls -------------------------------------------------------------------

    def call(self, method: str, *args: Any) -> Any:
        """Call exported ``method`` with positional ``args``; returns its result."""
        __tracebackhide__ = True
        return self.connection.call(self.uuid, self.name, method, args)

    def streamingcall(self, method: str, *args: Any) -> Generator[Any, None, None]:
        """Iterate the items an exported generator method yields."""
        return self.connection.streamingcall(self.uuid, self.name, method, args)

    @contextmanager
    def stream(self, method: str = "connect") -> Iterator[BlockingStream]:
        """Open the byte stream of an ``@exportstream`` method."""
        with self.connection.stream(self.uuid, self.name, method) as stream:
            yield stream

    async def call_async(self, method: str, *args: Any) -> Any:
        __tracebackhide__ = True
        return await self.connection.call_async(self.uuid, self.name, method, args)

    def streamingcall_async(self, method: str, *args: Any) -> AsyncGenerator[Any, None]:
        return self.connection.streamingcall_async(self.uuid, self.name, method, args)

    def stream_async(self, method: str = "connect") -> AsyncStream:
        """``async with client.stream_async("connect") as s: await s.send(b"..")``."""
        return self.connection.stream_async(self.uuid, self.name, method)

    def resource_async(self, stream: Any, content_encoding: str | None = None) -> AbstractAsyncContextManager[dict]:
        """Upload ``stream``'s bytes for a call to this driver: ``async with client.resource_async(s) as
        handle: await client.call_async("flash", handle)``; the driver reads them with ``self.resource()``.
        ``content_encoding`` ("gzip", "xz", "bz2") says ``stream`` is compressed; the driver gets it plain."""
        return self.connection.resource_async(self.uuid, self.name, stream, content_encoding)

    def open_stream(self, method: str = "connect") -> BlockingStream:
        """A byte stream left open until ``close()`` (upstream's name), for clients that hand one out."""
        stream = self.connection.stream(self.uuid, self.name, method)
        self.__dict__.setdefault("_open_streams", []).append(stream)
        return stream

    def close(self) -> None:
        """Close the streams ``open_stream()`` opened and what was entered on ``stack``."""
        for stream in self.__dict__.pop("_open_streams", []):
            stream.close()
        self.stack.close()

    @contextmanager
    def log_stream(self) -> Iterator[None]:
        """While inside, the exporter's log records are logged here too: a driver's to logger ``exporter:driver``,
        others to ``exporter:system`` (upstream's names)."""
        stop = self.connection.follow_logs(_log_remote)
        try:
            yield
        finally:
            stop()

    def reset(self) -> None:
        """Ask the exporter to reset every driver (``Driver.reset()``)."""
        self.connection.reset()

    # A root client owns its connection: ``with connect(...) as exporter:``.

    def __enter__(self) -> DriverClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_tree()
        self.connection.close()

    def _close_tree(self) -> None:
        self.close()
        for child in self.children.values():
            child._close_tree()


# Where the exporter's records are logged on this side, by their source (upstream's logger names).
_REMOTE_LOGGERS = {
    LOG_SOURCE_DRIVER: "exporter:driver",
    LOG_SOURCE_BEFORE_LEASE_HOOK: "exporter:beforeLease",
    LOG_SOURCE_AFTER_LEASE_HOOK: "exporter:afterLease",
}


def _log_remote(record: Any) -> None:
    level = logging.getLevelName(record.severity or "INFO")
    logger = logging.getLogger(_REMOTE_LOGGERS.get(record.source, "exporter:system"))
    logger.log(level if isinstance(level, int) else logging.INFO, "%s", record.message)


class CompositeClient(DriverClient):
    """Client of a driver that only groups children (an exporter's root from YAML)."""

    def cli(self) -> Any:
        """The click group of upstream's ``j`` command (click is needed): each child whose client has a ``cli()``
        adds its commands under its name (``j power on``), as upstream's composite client gathers them; a child
        without one is listed too, by a command that says so (``jumpstarter.client.nocli``)."""
        from jumpstarter.client.decorators import driver_click_group
        from jumpstarter.client.nocli import no_cli_command

        @driver_click_group(self)
        def group() -> None:
            """The exporter's drivers"""

        for name, child in self.children.items():
            if not isinstance(child, StubDriverClient) and callable(getattr(type(child), "cli", None)):
                group.add_command(child.cli(), name)
            else:
                group.add_command(no_cli_command(name, child, not isinstance(child, StubDriverClient)), name)
        return group


class StubDriverClient(DriverClient):
    """Stands in for a client class whose package is not installed on this side (upstream's name).

    The rest of the tree stays usable; using this driver raises an ImportError naming what to install.
    """

    def _missing(self) -> ClientClassError:
        class_path = self.labels.get(CLIENT_LABEL, "")
        package = class_path.partition(".")[0].replace("_", "-")
        where = f"export {self.name!r}" if self.name else "the exporter's root driver"
        return ClientClassError(
            f"{where}: driver client {class_path!r} is not installed here; install it on this side too "
            f"(pip install {package}), in the same version as on the exporter"
        )

    def call(self, method: str, *args: Any) -> Any:
        raise self._missing()

    def streamingcall(self, method: str, *args: Any) -> Generator[Any, None, None]:
        raise self._missing()

    async def call_async(self, method: str, *args: Any) -> Any:
        raise self._missing()

    def streamingcall_async(self, method: str, *args: Any) -> AsyncGenerator[Any, None]:
        raise self._missing()

    def stream(self, method: str = "connect") -> Any:
        raise self._missing()

    def stream_async(self, method: str = "connect") -> Any:
        raise self._missing()

    def log_stream(self) -> Any:
        raise self._missing()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy, pickle and hasattr probes: not a use of the driver
            raise AttributeError(name)
        raise self._missing()
