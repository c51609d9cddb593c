"""``blocking``: an async adapter usable from blocking code, under upstream Jumpstarter's name.

Driver packages write their adapters (port forwards, file handles for uploads, ...) once, as async
context managers taking ``client=``; ``@blocking`` gives the blocking form by running the async one
on the client's portal, the event loop its blocking calls already use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from functools import wraps
from typing import Any, ParamSpec, Protocol, TypeVar

__all__ = ["BlockingAdapter", "blocking"]

P = ParamSpec("P")
T = TypeVar("T")


class BlockingAdapter(Protocol[P, T]):
    """What ``@blocking`` makes: called as the adapter is, a blocking context manager; the async adapter itself
    is its ``__wrapped__`` (for async code, and for tests that drive it under their own event loop)."""

    __wrapped__: Callable[P, AbstractAsyncContextManager[T]]
    __name__: str  # the adapter's, as functools.wraps copies them
    __qualname__: str
    __doc__: str | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> AbstractContextManager[T]: ...


def blocking(f: Callable[P, AbstractAsyncContextManager[T]]) -> BlockingAdapter[P, T]:
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
