"""``@export`` and ``@exportstream``: mark the driver methods a client may reach."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

# Attribute set on a marked function; its value is one of the kinds below.
MARKER = "__jumpstarter_export__"
CALL = "call"  # plain or async method: one result (DriverCall)
STREAMING = "streaming"  # generator or async generator: many results (StreamingDriverCall)
STREAM = "stream"  # async context manager yielding a byte stream (RouterService.Stream)
# Attribute set on a generator method that declared how far it may run ahead: @export(lookahead=N).
LOOKAHEAD_MARKER = "__jumpstarter_lookahead__"


@overload
def export(func: F, /) -> F: ...
@overload
def export(*, lookahead: int | None = None) -> Callable[[F], F]: ...
def export(func: F | None = None, /, *, lookahead: int | None = None) -> F | Callable[[F], F]:
    """Let clients call this method by name. Generators are served as streaming calls.

    A generator runs ahead of the client by default (see docs/drivers.md, "Generators"); one that consumes what it
    yields (a device's console lines) says how far it may: ``@export(lookahead=0)`` produces an item only
    once the client asks for it, ``lookahead=N`` at most N items beyond those the client has taken.
    """
    if lookahead is not None and (type(lookahead) is not int or lookahead < 0):
        raise ValueError(f"@export(lookahead={lookahead!r}): a count of items, 0 or more")
    if func is None:
        return lambda f: _export(f, lookahead)
    return _export(func, lookahead)


def _export(func: F, lookahead: int | None) -> F:
    if not callable(func):
        raise TypeError(f"@export goes on a method, not on {type(func).__name__}")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        setattr(func, MARKER, STREAMING)
    else:
        setattr(func, MARKER, CALL)
    if lookahead is not None:
        if getattr(func, MARKER) != STREAMING:
            raise TypeError(f"@export(lookahead=...) is for generator methods; {func.__qualname__} is not one")
        setattr(func, LOOKAHEAD_MARKER, lookahead)
    return func


def exportstream(func: F) -> F:
    """Let clients open a byte stream on this method.

    The method is an async context manager (``@asynccontextmanager``) that
    yields an anyio byte stream or object stream of bytes. A bare async
    generator that yields one stream is wrapped for you.
    """
    if inspect.isasyncgenfunction(func):
        func = asynccontextmanager(func)  # type: ignore[assignment]
    setattr(func, MARKER, STREAM)
    return func
