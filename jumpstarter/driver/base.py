"""The exporter side of a driver: a ``Driver`` subclass with ``@export`` methods."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from jumpstarter.driver.decorators import MARKER
from jumpstarter.signature import Signature

CLIENT_LABEL = "jumpstarter.dev/client"
NAME_LABEL = "jumpstarter.dev/name"


@dataclass(frozen=True)
class Exported:
    """One exported method of a driver class, prepared once per class."""

    name: str
    kind: str  # decorators.CALL, STREAMING or STREAM
    is_async: bool
    signature: Signature
    doc: str


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
        is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        doc = inspect.cleandoc(func.__doc__) if func.__doc__ else ""
        table[name] = Exported(name, kind, is_async, Signature(func, name), doc)
    cls._jumpstarter_exported = table  # type: ignore[attr-defined]
    return table


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

    def __post_init__(self) -> None:
        cls = type(self)
        if getattr(cls.client, "__func__", None) is Driver.client.__func__:
            raise TypeError(
                f"{cls.__qualname__} must define a classmethod client() returning the import path of its client class"
            )
        for name, child in self.children.items():
            if not isinstance(child, Driver):
                raise TypeError(f"{cls.__qualname__}: child {name!r} is {type(child).__name__}, not a Driver")
        # Records carry the driver's uuid, so the exporter's LogStream can say which instance spoke.
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"jumpstarter.drivers.{cls.__qualname__}"), {"driver_uuid": str(self.uuid)}
        )
        exported_methods(cls)

    @classmethod
    def client(cls) -> str:
        """Import path of the client class, e.g. ``"my_driver.MyClient"``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the driver holds; the base closes the children."""
        for child in self.children.values():
            child.close()

    def reset(self) -> None:
        """Bring the hardware back to a known state; the base resets the children."""
        for child in self.children.values():
            child.reset()

    def walk(self, name: str = "", parent: Driver | None = None) -> Iterator[tuple[str, Driver | None, Driver]]:
        """(name, parent, driver) for this driver and every descendant, parents first."""
        yield name, parent, self
        for child_name, child in self.children.items():
            yield from child.walk(child_name, self)

    def method(self, name: str) -> tuple[Exported, Callable[..., Any]] | None:
        """The exported method ``name`` and its bound function, or None."""
        info = exported_methods(type(self)).get(name)
        return None if info is None else (info, getattr(self, name))


class Composite(Driver):
    """A driver that only groups children (the root of an exporter built from YAML)."""

    @classmethod
    def client(cls) -> str:
        # Upstream's name, so upstream clients know it; ours map it to jumpstarter.client.CompositeClient.
        return "jumpstarter_driver_composite.client.CompositeClient"
