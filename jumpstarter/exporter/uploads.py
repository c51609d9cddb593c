"""The bytes a client sends over RouterService.Stream: uploads for driver calls (held within a budget until the
driver reads them) and the frames of a driver's byte stream, copied both ways."""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import anyio
import grpc
from anyio.abc import ObjectReceiveStream
from anyio.streams.stapled import StapledObjectStream
from google.protobuf.message import DecodeError

from jumpstarter.common.frames import REQUESTS, Framing
from jumpstarter.driver.base import Driver
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.limits import MAX_UPLOADS_ENV, Limits
from jumpstarter.exporter.replies import refuse
from jumpstarter.v1 import router_pb2

_DATA, _GOAWAY = router_pb2.FRAME_TYPE_DATA, router_pb2.FRAME_TYPE_GOAWAY

UPLOAD_BUFFER = 32  # chunks the driver sends back on an upload (a dump) held until the client takes them


class UploadBudget:
    """The bytes uploads hold while their drivers haven't read them: at most ``each`` per upload (or one chunk,
    whatever its size) and ``total`` for all of an exporter's uploads. A client sending more waits (gRPC's flow
    control holds it back). A chunk for a driver that waits to read goes through whatever the others hold, so
    uploads nobody reads can't starve one that is read."""

    def __init__(self, each: int, total: int) -> None:
        self.each, self.total = each, total
        self.held = 0
        self._changed: anyio.Event | None = None

    def _admits(self, upload: Upload, size: int) -> bool:
        if upload.reader_waiting:
            return True
        if upload.held and upload.held + size > self.each:
            return False
        return self.held + size <= self.total

    async def admit(self, upload: Upload, size: int) -> None:
        """Wait until ``upload`` may hold ``size`` more bytes, and count them."""
        while not self._admits(upload, size):
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
        self.held += size
        upload.held += size

    def release(self, upload: Upload, size: int) -> None:
        self.held -= size
        upload.held -= size
        self.changed()

    def changed(self) -> None:
        """Wake the uploads waiting to hold more: bytes were read, or a driver waits to read."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class _Chunks(ObjectReceiveStream[bytes]):
    """The driver's side of an upload's bytes: each chunk read gives its bytes back to the budget."""

    def __init__(self, upload: Upload) -> None:
        self._upload = upload

    async def receive(self) -> bytes:
        upload = self._upload
        if not upload.held:  # nothing is waiting: the next chunk may come whatever the other uploads hold
            upload.reader_waiting = True
            upload.budget.changed()
        try:
            chunk = await upload.chunks.receive()
        finally:
            upload.reader_waiting = False
        upload.budget.release(upload, len(chunk))
        return chunk

    async def aclose(self) -> None:
        await self._upload.chunks.aclose()


class Upload:
    """A resource stream for a driver call: the bytes the client sends, which the driver reads, and the bytes
    the driver sends back (a dump into the client's file), which the exporter forwards to the client."""

    def __init__(self, budget: UploadBudget | None = None) -> None:
        self.budget = budget or UploadBudget(Limits.upload_buffer, Limits.upload_memory)
        self.held = 0  # bytes received and not yet read by the driver
        self.reader_waiting = False
        self.writer, self.chunks = anyio.create_memory_object_stream[bytes](math.inf)  # bounded by the budget
        self.replies, self.outgoing = anyio.create_memory_object_stream[bytes](UPLOAD_BUFFER)
        self.finished = anyio.Event()  # set when the driver is done with it

    async def send(self, chunk: bytes) -> None:
        """A chunk from the client, held for the driver once the budget allows (the writer's side)."""
        if not chunk:
            return
        await self.budget.admit(self, len(chunk))
        try:
            self.writer.send_nowait(chunk)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):  # the driver has closed its side
            self.budget.release(self, len(chunk))

    def stream(self) -> StapledObjectStream[bytes]:
        """What ``Driver.resource()`` gives the driver: receive the client's bytes, send bytes back."""
        return StapledObjectStream(self.replies, _Chunks(self))

    def finish(self) -> None:
        """The driver is done with it (or the call it was passed to has ended): no more replies."""
        self.replies.close()
        self.finished.set()

    async def close(self) -> None:
        self.finish()
        await self.writer.aclose()
        await self.chunks.aclose()
        await self.outgoing.aclose()
        if self.held:  # what the driver never read
            self.budget.release(self, self.held)


class Uploads:
    """An exporter's uploads: the budget of bytes they hold, and how many are open (at most ``limits.max_uploads``)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.budget = UploadBudget(limits.upload_buffer, limits.upload_memory)
        self.open = 0

    async def receive(self, driver: Driver, request_iterator: AsyncIterator[bytes], context: ServicerContext) -> None:
        """An upload from the client: its bytes wait for the driver under a handle, which the headers carry.

        The client passes the handle to a driver call, which reads the bytes with ``Driver.resource()``;
        the call ends once the driver is done with them. Content encodings are not accepted, so clients
        send plain bytes (upstream's client decompresses on its side when told so).
        """
        if self.open >= self.limits.max_uploads:
            why = (
                f"this exporter has {self.open} uploads open, the most it takes at once: end one first, "
                f"or raise the limit (jumpstarter run --max-uploads, or {MAX_UPLOADS_ENV})"
            )
            await refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, why)
        upload = Upload(self.budget)
        key = str(uuid4())
        handle = {"kind": "client_stream", "uuid": key, "x_jmp_content_encoding": None}
        driver.resources[key] = upload
        self.open += 1
        malformed: BaseException | None = None
        try:
            await context.send_initial_metadata((("resource", json.dumps(handle)),))
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(fill, upload, request_iterator, self.limits.upload_chunk)
                    async for reply in upload.outgoing:  # until the driver is done with it
                        await context.write(REQUESTS.encode(reply))
                    tg.cancel_scope.cancel()
            except* MalformedFrame as group:
                malformed = group.exceptions[0]
            else:
                await context.write(REQUESTS.goaway)
        finally:
            self.open -= 1
            driver.resources.pop(key, None)
            await upload.close()
        if malformed is not None:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(malformed))


def end_uploads(driver: Driver | None, args: list[Any]) -> None:
    """A call has ended: the uploads whose handles it was given end too, read or not (so that a client
    waiting for the rest of what the driver sent back isn't left waiting by a call that never opened it)."""
    if driver is None or not driver.resources:
        return
    for arg in args:
        if isinstance(arg, str) and arg.startswith("{"):
            try:
                arg = json.loads(arg)
            except ValueError:
                continue
        if isinstance(arg, dict) and arg.get("kind") == "client_stream":
            upload = driver.resources.pop(str(arg.get("uuid")), None)
            if upload is not None:
                upload.finish()


async def fill(upload: Upload, request_iterator: AsyncIterator[bytes], most: int) -> None:
    try:
        async with upload.writer:  # closed at the client's end: the driver's reading ends there too
            await frames_into(upload, request_iterator, REQUESTS, most)
    except BaseException as exc:
        # A cancelled upload's exception sits in a reference cycle: the frames of its traceback would hold the
        # upload and the chunk in hand until the cyclic collector runs. They are of no use now: clear them.
        traceback.clear_frames(exc.__traceback__)
        del upload, request_iterator
        raise


class MalformedFrame(ValueError):
    """A frame of a Stream call that doesn't parse, or is bigger than the call takes."""


async def frames_into(
    stream: Any, request_iterator: AsyncIterator[bytes], framing: Framing, most: int | None = None
) -> None:
    """Send the payloads of the client's DATA frames to ``stream`` until its GOAWAY or the end of its side;
    a payload of more than ``most`` bytes is refused."""
    try:
        async for message in request_iterator:
            frame = framing.parse(message)
            del message  # a framed payload is a copy: one copy waits for the stream, not two
            if frame.frame_type == _DATA:
                if most is not None and len(frame.payload) > most:
                    raise MalformedFrame(
                        f"an upload's chunk of {len(frame.payload)} bytes is more than an exporter takes in one "
                        f"message ({most} bytes, jumpstarter.common.wire.UPLOAD_CHUNK_MAX): send smaller chunks"
                    )
                await stream.send(frame.payload)
            elif frame.frame_type in (_GOAWAY, router_pb2.FRAME_TYPE_RST_STREAM):
                break
    except DecodeError as exc:
        raise MalformedFrame(f"malformed StreamRequest: {exc}"[:500]) from None


async def pump(stream: Any, request_iterator: AsyncIterator[bytes], context: ServicerContext, framing: Framing) -> None:
    """Copy payloads between a gRPC Stream call and a driver's anyio stream, both ways."""

    async def inbound() -> None:
        try:
            await frames_into(stream, request_iterator, framing)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return  # the driver has closed its side: it takes no more
        send_eof = getattr(stream, "send_eof", None)
        if send_eof is not None:
            try:
                await send_eof()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, NotImplementedError):
                pass

    async def outbound() -> None:
        try:
            while True:
                data = await stream.receive()
                await context.write(framing.encode(data))
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        if framing.goaway is not None:
            await context.write(framing.goaway)

    malformed: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(inbound)
            await outbound()
    except* MalformedFrame as group:
        malformed = group.exceptions[0]
    if malformed is not None:
        await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(malformed))
