"""Client ends of a driver byte stream (RouterService.Stream), blocking and async."""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import anyio
import grpc
from google.protobuf.message import DecodeError

from jumpstarter.common.frames import DATA, GOAWAY, Framing, client_framing
from jumpstarter.errors import ConnectError

_CLOSE = object()


def _malformed(exc: DecodeError) -> ConnectError:
    return ConnectError(f"the exporter sent a malformed byte-stream frame: {exc}")


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

    ``open_call`` is RouterService.Stream with bytes for messages, opened with ``metadata`` that asks for no frames:
    the exporter's headers say whether it takes them so (``_framing``).
    """

    def __init__(self, open_call: Any, metadata: tuple, on_error: Any) -> None:
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._on_error = on_error
        self._opened = threading.Event()
        self._framing_known: Framing | None = None
        self._call = open_call(self._requests(), metadata=metadata)
        self._opened.set()
        self._responses = iter(self._call)
        self._eof_sent = self._ended = False

    def _framing(self) -> Framing:
        """How the exporter's headers (which this waits for) say the messages go."""
        if self._framing_known is None:
            self._framing_known = client_framing(self._call.initial_metadata())
        return self._framing_known

    def _requests(self) -> Iterator[bytes]:
        """The messages to send, from what send() and send_eof() queued (None: GOAWAY), until close(). grpc reads
        it in a thread of its own, so the frames are made there, and it may wait for the exporter's headers."""
        self._opened.wait()
        framing = self._framing()
        for payload in iter(self._outbox.get, _CLOSE):
            if payload is not None:
                yield framing.encode(payload)
            elif framing.goaway is None:
                return  # unframed: the end of the requests says it
            else:
                yield framing.goaway

    def send(self, data: bytes) -> None:
        if self._eof_sent:
            raise anyio.ClosedResourceError("send() after send_eof()")
        self._outbox.put(bytes(data))

    def send_eof(self) -> None:
        """Tell the driver no more data comes from this side."""
        if not self._eof_sent:
            self._eof_sent = True
            self._outbox.put(None)  # GOAWAY

    def receive(self) -> bytes:
        if self._ended:
            raise anyio.EndOfStream
        try:
            parse = self._framing().parse
            for message in self._responses:
                frame = parse(message)
                if frame.frame_type == DATA:
                    return frame.payload
                if frame.frame_type == GOAWAY:
                    break
        except grpc.RpcError as err:
            self._ended = True
            raise self._on_error(err) from None
        except DecodeError as exc:
            self._ended = True
            self._call.cancel()
            raise _malformed(exc) from None
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
        self._framing_known: Framing | None = None

    async def _framing(self) -> Framing:
        if self._framing_known is None:
            self._framing_known = client_framing(await self._call.initial_metadata())
        return self._framing_known

    async def send(self, data: bytes) -> None:
        if self._eof_sent:
            raise anyio.ClosedResourceError("send() after send_eof()")
        try:
            framing = await self._framing()
            await self._call.write(framing.encode(bytes(data)))
        except grpc.RpcError as err:
            raise self._on_error(err) from None

    async def send_eof(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            try:
                framing = await self._framing()
                if framing.goaway is None:
                    await self._call.done_writing()
                else:
                    await self._call.write(framing.goaway)
            except grpc.RpcError:
                pass

    async def receive(self) -> bytes:
        while not self._ended:
            try:
                framing = await self._framing()
                message = await self._call.read()
            except grpc.RpcError as err:
                self._ended = True
                raise self._on_error(err) from None
            if message is grpc.aio.EOF:
                self._ended = True
                break
            try:
                frame = framing.parse(message)
            except DecodeError as exc:
                self._ended = True
                self._call.cancel()
                raise _malformed(exc) from None
            if frame.frame_type == GOAWAY:
                self._ended = True
            elif frame.frame_type == DATA:
                return frame.payload
        raise anyio.EndOfStream

    async def aclose(self) -> None:
        await self.send_eof()
        self._call.cancel()
