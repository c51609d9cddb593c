"""A client's uploads (``resource_async()``): what it uploads from, the stream that carries the bytes and what
the driver sends back, and a long upload's progress on the terminal.

Progress is one line, rewritten in place, and nothing where stderr is no terminal: an image being flashed takes
minutes; a test run's output (captured, or a CI log) must not fill with progress, so only a terminal sees it,
and only once an upload has run for a while.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import grpc

from jumpstarter.common.frames import DATA
from jumpstarter.common.wire import UPLOAD_CHUNK_MAX
from jumpstarter.errors import ConnectError
from jumpstarter.streams.encoding import Compression, create_decompressor, decompress_chunks

if TYPE_CHECKING:
    from jumpstarter.client.connection import Connection

REPLY_GRACE = 30.0  # seconds a resource stream's end is awaited after its block (see upload)
UPLOAD_CHUNK = 64 * 1024  # what a file or bytes is read in


@asynccontextmanager
async def upload(
    connection: Connection, uuid: str, target: str, source: Any, content_encoding: str | None = None
) -> AsyncIterator[dict]:
    """``Connection.resource_async()``: upload ``source`` for a driver call of ``uuid``; yields the handle."""
    label, total = upload_label(source, target), upload_size(source)
    source = upload_source(source, target)
    try:
        decompressor = create_decompressor(content_encoding) if content_encoding else None
    except (ValueError, ModuleNotFoundError) as exc:  # a name we don't know; zstd without its codec installed
        why = exc if isinstance(exc, ModuleNotFoundError) else ", ".join(Compression)
        message = f"{target}: content encoding {content_encoding!r} is not supported ({why})"
        raise NotImplementedError(message) from None
    metadata = connection._stream_metadata(kind="resource", uuid=uuid, x_jmp_content_encoding=None)
    call = connection._aio_stubs().stream(metadata=metadata)
    try:
        headers = dict(await call.initial_metadata())
        if "resource" not in headers:
            await call.read()  # a refused upload (leased, passphrase, no such driver) ends here with its reason
        handle = json.loads(headers["resource"])
    except grpc.RpcError as err:
        raise connection._error(target, "resource")(err) from None
    except (KeyError, ValueError):
        call.cancel()
        raise ConnectError(f"exporter at {connection.address} sent no resource handle for {target}") from None

    async def upload() -> None:
        chunks = with_progress(chunks_of(source), label, total)  # on a terminal, a long upload shows progress
        if decompressor is not None:
            chunks = decompress_chunks(chunks, decompressor)
        # A write after the exporter has ended the stream fails, and gRPC then ends the call as INTERNAL, which
        # the replies still to read would report: so nothing is written once the call is done. (This task may
        # start late: a dump's whole call can be over before its empty upload says GOAWAY.)
        try:
            async for chunk in chunks:
                for start in range(0, len(chunk), UPLOAD_CHUNK_MAX):  # an exporter takes no bigger message
                    if call.done():
                        return
                    await call.write(bytes(chunk[start : start + UPLOAD_CHUNK_MAX]))
            if not call.done():
                await call.write(None)  # GOAWAY
                await call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass  # the exporter ended the stream first: what it ended with is for replies() to read

    replied = anyio.Event()
    refused: list[TypeError] = []

    async def replies() -> None:
        try:
            await read_replies()
        except grpc.RpcError as err:  # raised after the task group, not wrapped in its ExceptionGroup
            ended.append(err)

    ended: list[grpc.RpcError] = []

    async def read_replies() -> None:
        """Bytes the driver sends back (a dump into ``source``), until the exporter ends the stream."""
        send = getattr(source, "send", None)
        while (frame := await call.read()) is not grpc.aio.EOF:
            if frame.frame_type != DATA:
                break  # GOAWAY: the driver is done with it
            if not frame.payload:
                continue
            if send is None:
                refused.append(
                    TypeError(
                        f"{target}: the driver sent bytes back, but the source "
                        f"({type(source).__name__}) can't take them: pass a stream with send()"
                    )
                )
                break
            await send(frame.payload)
        with suppress(AttributeError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            await source.send_eof()
        replied.set()

    failed: BaseException | None = None
    try:
        async with anyio.create_task_group() as uploading:
            uploading.start_soon(upload)
            uploading.start_soon(replies)
            try:
                yield handle
            except BaseException as exc:  # raised again below, not wrapped in the task group's ExceptionGroup
                failed = exc
            else:
                # The calls given the handle have returned; the exporter ends the stream once it has sent what
                # the driver sent back (a peer that never ends it gets this long). A handle given to no call
                # has nothing to wait for.
                if handle.get("uuid") in connection._handed:
                    with anyio.move_on_after(REPLY_GRACE):
                        await replied.wait()
            uploading.cancel_scope.cancel()  # what the driver didn't read is not sent
    except grpc.RpcError as err:
        raise connection._error(target, "resource")(err) from None
    finally:
        call.cancel()
        connection._handed.discard(handle.get("uuid"))
        if hasattr(source, "aclose"):  # as upstream's client does: a file written by a dump is flushed here
            with anyio.CancelScope(shield=True):
                await source.aclose()
    if failed is not None:
        raise failed
    if ended:
        raise connection._error(target, "resource")(ended[0]) from None
    if refused:
        raise refused[0]


def upload_source(source: Any, target: str) -> Any:
    """What ``resource_async()`` uploads from.

    An anyio byte stream or an async iterable of bytes is taken as it is; from ordinary test code also
    bytes, a path (``str`` or ``os.PathLike``) and a file opened in binary mode, read in a worker thread.
    Anything else is refused here, naming its type, before the upload starts.
    """
    if hasattr(source, "receive") or hasattr(source, "__aiter__"):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        try:
            os.stat(source)  # a missing file fails here, before anything is sent
        except OSError as exc:
            raise FileNotFoundError(f"{target}: can't upload {os.fspath(source)!r}: {exc.strerror}") from None
        return file_chunks(source)
    if isinstance(source, io.TextIOBase):
        raise TypeError(f"{target}: can't upload a file opened as text ({source!r}): open it in binary mode, 'rb'")
    if callable(getattr(source, "read", None)):
        return file_chunks(source)
    raise TypeError(
        f"{target}: can't upload a {type(source).__name__}: pass bytes, a path, a file opened with 'rb', "
        "or an async byte stream"
    )


async def _from_bytes(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), UPLOAD_CHUNK):
        yield data[start : start + UPLOAD_CHUNK]


async def file_chunks(file: Any) -> AsyncGenerator[bytes, None]:
    """A binary file's bytes, a chunk at a time, read in a worker thread. ``file`` is a path (opened here, and
    closed when the generator ends or is closed: resource_async() closes it) or a file opened 'rb' (left open:
    the caller's)."""
    if isinstance(file, (str, os.PathLike)):
        async with await anyio.open_file(file, "rb") as opened:
            async for chunk in file_chunks(opened.wrapped):
                yield chunk
        return
    while chunk := await anyio.to_thread.run_sync(file.read, UPLOAD_CHUNK):
        yield chunk


async def chunks_of(source: Any) -> AsyncIterator[bytes]:
    """The chunks of an upload's source: an anyio byte stream, or an async iterable of bytes."""
    if hasattr(source, "receive"):
        try:
            while True:
                yield await source.receive()
        except anyio.EndOfStream:
            return
    async for chunk in source:
        yield chunk


SHOW_AFTER = 1.0  # seconds: a quicker upload shows nothing
EVERY = 0.2  # seconds between two updates of the line


def upload_size(source: Any) -> int | None:
    """The bytes ``source`` will give, where that is known before reading: bytes, a path, a regular file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.stat(source).st_size
        if callable(getattr(source, "fileno", None)) and callable(getattr(source, "tell", None)):
            return os.fstat(source.fileno()).st_size - source.tell()
    except (OSError, ValueError):
        pass
    return None


def upload_label(source: Any, target: str) -> str:
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    return f"{os.path.basename(name)} to {target}" if isinstance(name, str) else f"upload to {target}"


async def with_progress(
    chunks: AsyncIterator[bytes], label: str, total: int | None, out: TextIO | None = None
) -> AsyncIterator[bytes]:
    """``chunks`` as they are, counted on a progress line when ``out`` (stderr) is a terminal."""
    out = out or sys.stderr
    if not out.isatty():
        async for chunk in chunks:
            yield chunk
        return
    started = shown = time.monotonic()
    sent = 0
    drawn = False
    async for chunk in chunks:
        sent += len(chunk)
        now = time.monotonic()
        if now - started >= SHOW_AFTER and now - shown >= EVERY:
            out.write("\r" + _line(label, sent, total, now - started))
            out.flush()
            shown, drawn = now, True
        yield chunk
    if drawn:
        out.write("\r" + _line(label, sent, total, time.monotonic() - started) + "\n")
        out.flush()


def _line(label: str, sent: int, total: int | None, seconds: float) -> str:
    rate = sent / seconds / 1e6 if seconds > 0 else 0.0
    if total:
        return f"{label}: {100 * sent / total:3.0f}% {sent / 1e6:.1f}/{total / 1e6:.1f} MB, {rate:.1f} MB/s "
    return f"{label}: {sent / 1e6:.1f} MB, {rate:.1f} MB/s "
