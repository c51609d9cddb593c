"""``@export`` and ``@exportstream``: mark the driver methods a client may reach."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# Attribute set on a marked function; its value is one of the kinds below.
MARKER = "__jumpstarter_export__"
CALL = "call"  # plain or async method: one result (DriverCall)
STREAMING = "streaming"  # generator or async generator: many results (StreamingDriverCall)
STREAM = "stream"  # async context manager yielding a byte stream (RouterService.Stream)


def export(func: F) -> F:
    """Let clients call this method by name. Generators are served as streaming calls."""
    if not callable(func):
        raise TypeError(f"@export goes on a method, not on {type(func).__name__}")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        setattr(func, MARKER, STREAMING)
    else:
        setattr(func, MARKER, CALL)
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
