"""Client ends of a driver byte stream (RouterService.Stream), blocking and async."""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import anyio
import grpc

from jumpstarter.common.frames import DATA, GOAWAY

_CLOSE = object()


class BlockingStreamBase:
    """What a client's blocking byte stream is besides ``receive()`` and ``close()``: iterable (chunks until
    ``anyio.EndOfStream``) and a context manager that closes it. The recording and replaying streams of the
    pytest plugin are ones too."""

    def receive(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield self.receive()
            except anyio.EndOfStream:
                return

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStreamBase:
    """The async twin of BlockingStreamBase: ``async for``, ``async with``, over ``receive()`` and ``aclose()``."""

    async def receive(self) -> bytes:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.receive()
            except anyio.EndOfStream:
                return

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class BlockingStream(BlockingStreamBase):
    """A byte stream to a driver: ``send(bytes)``, ``receive() -> bytes``, ``send_eof()``.

    ``receive`` raises ``anyio.EndOfStream`` once the driver's side has ended,
    as an anyio stream does. Iterating yields chunks until then.
    """

    def __init__(self, open_call: Any, metadata: tuple, on_error: Any) -> None:
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._on_error = on_error
        requests = iter(self._outbox.get, _CLOSE)  # payloads (None: GOAWAY) until close()
        self._call = open_call(requests, metadata=metadata)
        self._responses = iter(self._call)
        self._eof_sent = self._ended = False

    def send(self, data: bytes) -> None:
        if self._eof_sent:
            raise anyio.ClosedResourceError("send() after send_eof()")
        self._outbox.put(bytes(data))  # framed in grpc's thread (frames.encode)

    def send_eof(self) -> None:
        """Tell the driver no more data comes from this side."""
        if not self._eof_sent:
            self._eof_sent = True
            self._outbox.put(None)  # GOAWAY

    def receive(self) -> bytes:
        if self._ended:
            raise anyio.EndOfStream
        try:
            for frame in self._responses:
                if frame.frame_type == DATA:
                    return frame.payload
                if frame.frame_type == GOAWAY:
                    break
        except grpc.RpcError as err:
            self._ended = True
            raise self._on_error(err) from None
        self._ended = True
        raise anyio.EndOfStream

    def close(self) -> None:
        self.send_eof()
        self._outbox.put(_CLOSE)
        self._call.cancel()


class AsyncStream(AsyncStreamBase):
    """The async twin of BlockingStream, for use under anyio/asyncio."""

    def __init__(self, call: Any, on_error: Any) -> None:
        self._call = call
        self._on_error = on_error
        self._eof_sent = self._ended = False

    async def send(self, data: bytes) -> None:
        if self._eof_sent:
            raise anyio.ClosedResourceError("send() after send_eof()")
        try:
            await self._call.write(bytes(data))
        except grpc.RpcError as err:
            raise self._on_error(err) from None

    async def send_eof(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            try:
                await self._call.write(None)  # GOAWAY
            except grpc.RpcError:
                pass

    async def receive(self) -> bytes:
        while not self._ended:
            try:
                frame = await self._call.read()
            except grpc.RpcError as err:
                self._ended = True
                raise self._on_error(err) from None
            if frame is grpc.aio.EOF or frame.frame_type == GOAWAY:
                self._ended = True
            elif frame.frame_type == DATA:
                return frame.payload
        raise anyio.EndOfStream

    async def aclose(self) -> None:
        await self.send_eof()
        self._call.cancel()
