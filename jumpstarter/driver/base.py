"""The exporter side of a driver: a ``Driver`` subclass with ``@export`` methods."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from anyio.abc import ObjectStream

from jumpstarter.common.secrets import redact, redacted_traceback
from jumpstarter.common.wire import CLIENT_LABEL, NAME_LABEL
from jumpstarter.driver.decorators import LOOKAHEAD_MARKER, MARKER, STREAM
from jumpstarter.signature import Signature
from jumpstarter.v1 import jumpstarter_pb2


@dataclass(frozen=True)
class Exported:
    """One exported method of a driver class, prepared once per class."""

    name: str
    kind: str  # decorators.CALL, STREAMING or STREAM
    is_async: bool
    signature: Signature
    doc: str
    lookahead: int | None = None  # a generator's declared @export(lookahead=N); None: the default


def exported_methods(cls: type) -> dict[str, Exported]:
    """The exported methods of a driver class, by name (cached on the class)."""
    cached = cls.__dict__.get("_jumpstarter_exported")
    if cached is not None:
        return cached
    table: dict[str, Exported] = {}
    for name in dir(cls):
        func = inspect.getattr_static(cls, name, None)
        if isinstance(func, (staticmethod, classmethod)):
            func = func.__func__
        kind = getattr(func, MARKER, None)
        if kind is None or not callable(func):
            continue
        if kind == STREAM and getattr(getattr(func, "__wrapped__", None), MARKER, None) == STREAM:
            # @asynccontextmanager above @exportstream wraps a context manager in another: it would fail only
            # on the client's first receive() ("'_AsyncGeneratorContextManager' object is not an async iterator").
            raise TypeError(
                f"{cls.__qualname__}.{name}: @exportstream must be the outer decorator, above "
                "@asynccontextmanager (or alone, on an async generator that yields one stream)"
            )
        is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        doc = inspect.cleandoc(func.__doc__) if func.__doc__ else ""
        lookahead = getattr(func, LOOKAHEAD_MARKER, None)
        table[name] = Exported(name, kind, is_async, Signature(func, name), doc, lookahead)
    cls._jumpstarter_exported = table  # type: ignore[attr-defined]
    return table


class DriverLogger(logging.LoggerAdapter):
    """A driver's logger: its records carry the driver's uuid, so that the exporter's LogStream can say which
    instance spoke. The uuid is read when a record is made: upstream's tests build drivers field by field
    (``object.__new__`` then ``__post_init__()``), and may set the uuid last."""

    def __init__(self, logger: logging.Logger, driver: Driver) -> None:
        super().__init__(logger, {})
        self.driver = driver

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        uuid = getattr(self.driver, "uuid", None)
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "driver_uuid": str(uuid) if uuid else None}
        return msg, kwargs


@dataclass(kw_only=True)
class Driver:
    """Base of every exporter-side driver.

    Configuration parameters are dataclass fields: decorate a subclass with
    ``@dataclass(kw_only=True)`` and the ``config:`` mapping of the YAML
    becomes its keyword arguments. ``children`` are reached on the client as
    attributes of this driver's client.
    """

    children: dict[str, Driver] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    methods_description: dict[str, str] = field(default_factory=dict)  # help per method; docstrings otherwise
    uuid: UUID = field(default_factory=uuid4)
    log_level: str = "INFO"  # level of this driver's logger, as upstream's drivers take it from their config
    # Uploads waiting for a call, by handle uuid (Upload objects; typed Any so that drivers declared with
    # pydantic's dataclass decorator, as upstream's are, can subclass this one).
    resources: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if hasattr(super(), "__post_init__"):  # a mixin before us in the MRO may need its own
            super().__post_init__()  # type: ignore[misc]
        cls = type(self)
        if getattr(cls.client, "__func__", None) is _BASE_CLIENT:
            raise TypeError(
                f"{cls.__qualname__} must define a classmethod client() returning the import path of its client class"
            )
        for name, child in self.children.items():
            if not isinstance(child, Driver):
                raise TypeError(f"{cls.__qualname__}: child {name!r} is {type(child).__name__}, not a Driver")
        self.logger = DriverLogger(logging.getLogger(f"jumpstarter.drivers.{cls.__qualname__}"), self)
        self.logger.setLevel(self.log_level)
        exported_methods(cls)

    @classmethod
    def client(cls) -> str:
        """Import path of the client class, e.g. ``"my_driver.MyClient"``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the driver holds; the base closes the children, every one, and raises after what failed
        (an ExceptionGroup when several did)."""
        errors: list[Exception] = []
        for child in self.children.values():
            try:
                child.close()
            except Exception as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup(f"closing the children of {type(self).__qualname__} failed", errors)

    def reset(self) -> None:
        """Bring the hardware back to a known state; the base resets the children."""
        for child in self.children.values():
            child.reset()

    @asynccontextmanager
    async def resource(self, handle: Any, timeout: float | None = None) -> AsyncIterator[ObjectStream[bytes]]:
        """The resource stream the client opened with ``resource_async()``, whose handle it passed to this call.

        ``async with self.resource(handle) as data: async for chunk in data: ...`` reads what the client sends;
        ``await data.send(chunk)`` sends bytes back into the client's stream (upstream's name and use;
        ``timeout`` is accepted for upstream's signature: a resource waits as long as the call does).
        """
        try:
            info = json.loads(handle) if isinstance(handle, str) else handle
        except ValueError:
            info = None
        kind = info.get("kind") if isinstance(info, dict) else None
        if kind == "presigned_request":
            from jumpstarter.driver.presigned import presigned

            url, method, headers = info.get("url"), info.get("method"), info.get("headers") or {}
            if not (isinstance(url, str) and isinstance(method, str) and isinstance(headers, dict)) or not all(
                isinstance(v, str) for v in headers.values()
            ):
                query = url.partition("?")[2] if isinstance(url, str) else ""  # a signature, even in a URL gone wrong
                got = redact(repr(handle), [query])
                raise ValueError(
                    "a presigned_request handle needs a 'url' and a 'method' (strings) and may have 'headers' "
                    f"(a dict of strings); got {got:.200}"
                )
            async with presigned(url, method, headers, timeout or 7200) as stream:
                yield stream
            return
        if kind != "client_stream":
            if not kind:
                raise ValueError(f"{handle!r:.200} is not a resource handle (resource_async() on the client gives one)")
            raise NotImplementedError(f"resource kind {kind!r:.100} is not supported here")
        upload = self.resources.pop(str(info.get("uuid")), None)
        if upload is None:
            raise ValueError(f"no upload {info.get('uuid')!r:.100} is waiting for {type(self).__qualname__}")
        try:
            yield upload.stream()
        finally:
            upload.finish()

    def extra_labels(self) -> dict[str, str]:
        """Labels computed by the driver, added to its ``labels`` in the exporter's report (upstream's hook)."""
        return {}

    def report(self, *, parent: Driver | None = None, name: str | None = None) -> jumpstarter_pb2.DriverInstanceReport:
        """How this driver appears in the exporter's GetReport: its uuid, parent, labels and help texts.

        Upstream's hook: a driver standing in for another (upstream's ``Proxy``) reports that one instead.
        """
        labels = {**self.labels, **self.extra_labels(), CLIENT_LABEL: self.client()}
        if name:
            labels[NAME_LABEL] = name
        methods = {m.name: m.doc for m in exported_methods(type(self)).values() if m.doc}
        methods.update(self.methods_description)
        report = jumpstarter_pb2.DriverInstanceReport(uuid=str(self.uuid), labels=labels, methods_description=methods)
        if parent is not None:
            report.parent_uuid = str(parent.uuid)
        if self.description:
            report.description = self.description
        return report

    def enumerate(
        self, *, root: Driver | None = None, parent: Driver | None = None, name: str | None = None
    ) -> list[tuple[UUID, Driver | None, str | None, Driver]]:
        """(uuid, parent, name, driver) for this driver and every descendant, parents first (upstream's hook:
        a driver standing in for another enumerates that one, so the same driver may appear twice)."""
        found: list[tuple[UUID, Driver | None, str | None, Driver]] = [(self.uuid, parent, name, self)]
        for child_name, child in self.children.items():
            found.extend(child.enumerate(root=root or self, parent=self, name=child_name))
        return found

    def method(self, name: str) -> tuple[Exported, Callable[..., Any]] | None:
        """The exported method ``name`` and its bound function, or None."""
        info = exported_methods(type(self)).get(name)
        return None if info is None else (info, getattr(self, name))


def close_drivers(root: Driver) -> list[tuple[str, Exception]]:
    """Close every driver of ``root``'s tree, ``root.close()`` first; the failures, each logged with the driver's path.

    A driver whose ``close()`` raises, even before it closes its children, still has them closed, and so does every
    driver after it: while this runs, each driver's ``close`` is one that closes it once and notes its failure.
    """
    failures: list[tuple[str, Exception]] = []
    closed: set[int] = set()
    drivers: dict[int, tuple[str, Driver]] = {}
    paths: dict[int, str] = {}
    for _, parent, name, driver in root.enumerate():
        path = f"{paths.get(id(parent), '')}.{name}".lstrip(".") if parent is not None and name else ""
        paths.setdefault(id(driver), path)
        drivers.setdefault(id(driver), (path or "the root driver", driver))

    def closing(label: str, driver: Driver, close: Callable[[], None]) -> Callable[[], None]:
        def close_once() -> None:
            if id(driver) in closed:
                return
            closed.add(id(driver))
            try:
                close()
            except Exception as exc:
                failures.append((label, exc))
                why = redact(str(exc)) or type(exc).__name__  # (a message may quote a credential)
                _log.error("closing %s (%s) failed: %s", label, type(driver).__qualname__, why)
                _log.debug("closing %s failed\n%s", label, redacted_traceback(exc))

        return close_once

    patched: list[Driver] = []
    closers = []
    for label, driver in drivers.values():
        closers.append(closing(label, driver, driver.close))
        try:
            object.__setattr__(driver, "close", closers[-1])
            patched.append(driver)
        except (AttributeError, TypeError):  # no instance attributes (slots): closed below all the same
            pass
    try:
        for close in closers:  # the root first, then whatever it left open, parents first
            close()
    finally:
        for driver in patched:
            try:
                object.__delattr__(driver, "close")
            except AttributeError:
                pass
    return failures


_log = logging.getLogger("jumpstarter.exporter")


# The base's client() (a bound classmethod's function): a driver class whose client() is this one declared none.
_BASE_CLIENT = vars(Driver)["client"].__func__


class Composite(Driver):
    """A driver that only groups children (the root of an exporter built from YAML)."""

    @classmethod
    def client(cls) -> str:
        # Upstream's name, so upstream clients know it; ours map it to jumpstarter.client.CompositeClient.
        return "jumpstarter_driver_composite.client.CompositeClient"
