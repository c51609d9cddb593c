"""``blocking``: an async adapter usable from blocking code, under upstream Jumpstarter's name.

Driver packages write their adapters (port forwards, file handles for uploads, ...) once, as async
context managers taking ``client=``; ``@blocking`` gives the blocking form by running the async one
on the client's portal, the event loop its blocking calls already use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar

__all__ = ["blocking"]

P = ParamSpec("P")
T = TypeVar("T")


def blocking(f: Callable[P, AbstractAsyncContextManager[T]]) -> Callable[P, AbstractContextManager[T]]:
    """Turn an adapter returning an async context manager into one returning a blocking context manager.

    The adapter must be called with ``client=`` (a keyword argument): its ``portal`` runs the async
    context manager, and what it yields is yielded here. The original stays reachable as ``__wrapped__``.
    """

    @wraps(f)
    @contextmanager
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        client: Any = kwargs.get("client")
        if client is None:
            raise TypeError(f"{f.__qualname__}() needs client= (a keyword argument): its portal runs the adapter")
        with client.portal.wrap_async_context_manager(f(*args, **kwargs)) as value:
            yield value

    return wrapper
