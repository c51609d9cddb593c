"""In-memory stream pairs and two-way forwarding between byte streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from anyio import BrokenResourceError, ClosedResourceError, create_memory_object_stream, create_task_group
from anyio.abc import AnyByteStream
from anyio.streams.stapled import StapledObjectStream

logger = logging.getLogger(__name__)

MEMORY_STREAM_BUFFER = 32  # chunks one direction of create_memory_stream() holds before send() waits


async def copy_stream(dst: AnyByteStream, src: AnyByteStream) -> None:
    """Send what ``src`` yields to ``dst`` until ``src`` ends, then end ``dst``'s sending side too.

    Passing the end on keeps half-closed protocols working (a request, EOF, then the reply). A side that breaks
    or is closed meanwhile ends the copy: that is how a connection is torn down, so it is logged, not raised.
    """
    try:
        async for chunk in src:
            await dst.send(chunk)
        # A send-only object stream has no send_eof; on macOS a unix socket whose peer left raises ENOTCONN.
        with suppress(AttributeError, OSError):
            await dst.send_eof()
    except (BrokenResourceError, ClosedResourceError, asyncio.InvalidStateError) as exc:
        # EPIPE is the peer closing first during an ordinary teardown; anything else is worth a warning.
        level = logging.DEBUG if isinstance(exc.__cause__, BrokenPipeError) else logging.WARNING
        logger.log(level, "stream copy interrupted (%s): %s", type(exc).__name__, exc)
        if exc.__cause__ is not None:
            logger.debug("stream copy interrupted by %r", exc.__cause__)


@asynccontextmanager
async def forward_stream(a: AnyByteStream, b: AnyByteStream) -> AsyncIterator[None]:
    """Copy ``a`` to ``b`` and ``b`` to ``a`` (see copy_stream) while the block runs.

    Each direction goes on until its source ends or its destination is gone. Leaving the block waits for both
    directions to finish, then closes both streams. An error in the block stops the copying at once and, as from
    any anyio task group, comes out wrapped in an ExceptionGroup.
    """
    async with a, b, create_task_group() as tg:
        tg.start_soon(copy_stream, a, b)
        tg.start_soon(copy_stream, b, a)
        yield


def create_memory_stream() -> tuple[StapledObjectStream[bytes], StapledObjectStream[bytes]]:
    """Two connected in-process byte streams: what one sends the other receives; ``send_eof()`` ends a direction.

    For a driver that is its own peer, e.g. one handing a client the far end of a stream it serves itself.
    """
    a_to_b, b_from_a = create_memory_object_stream[bytes](MEMORY_STREAM_BUFFER)
    b_to_a, a_from_b = create_memory_object_stream[bytes](MEMORY_STREAM_BUFFER)
    return StapledObjectStream(a_to_b, a_from_b), StapledObjectStream(b_to_a, b_from_a)
