"""The gRPC services of an exporter, dispatching to a tree of drivers."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from uuid import uuid4

import anyio
import grpc
from anyio.from_thread import start_blocking_portal
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp

from jumpstarter.driver.base import Driver, Exported, Upload
from jumpstarter.driver.decorators import CALL, STREAM, STREAMING
from jumpstarter.errors import DRIVER_ERROR_KEY, message_for, status_for
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.threaded import iterate_in_thread, run_in_worker
from jumpstarter.signature import ArgumentError
from jumpstarter.v1 import common_pb2, jumpstarter_pb2, jumpstarter_pb2_grpc, router_pb2, router_pb2_grpc
from jumpstarter.values import ValueTypeError, decode_args, encode_result

log = logging.getLogger("jumpstarter.exporter")

_END = object()
_DATA, _GOAWAY = router_pb2.FRAME_TYPE_DATA, router_pb2.FRAME_TYPE_GOAWAY
_LOG_QUEUE = 1000  # records kept per LogStream subscriber before dropping


class Session(jumpstarter_pb2_grpc.ExporterServiceServicer, router_pb2_grpc.RouterServiceServicer):
    """Serves one driver tree. ``labels`` become the exporter's labels in GetReport."""

    def __init__(
        self, root: Driver | None = None, labels: dict[str, str] | None = None, *, root_device: Driver | None = None
    ) -> None:
        root = root or root_device  # upstream's keyword
        if root is None:
            raise TypeError("Session needs the root driver")
        self.root = root
        self.status: int = common_pb2.EXPORTER_STATUS_LEASE_READY
        self.labels = dict(labels or {})
        self.drivers: dict[str, Driver] = {}
        self.paths: dict[str, str] = {}  # uuid -> dotted export path, for messages
        self.reports: list[jumpstarter_pb2.DriverInstanceReport] = []
        for uuid_, parent, name, driver in root.enumerate():
            uuid = str(uuid_)
            if self.drivers.get(uuid, driver) is not driver:  # the same driver twice is a stand-in (Proxy)
                raise ValueError(f"driver {name or type(driver).__qualname__!r} has the uuid of another driver")
            self.drivers[uuid] = driver
            parent_path = self.paths.get(str(parent.uuid), "") if parent is not None else ""
            self.paths.setdefault(uuid, f"{parent_path}.{name}".lstrip(".") if parent is not None else "")
            self.reports.append(driver.report(parent=parent, name=name))
        self._log_subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()
        self._log_lock = threading.Lock()
        self._log_handler = _ForwardingHandler(self)

    # Upstream's in-process use: ``with Session(root_device=d) as s, s.serve_unix() as path:`` ---------

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.root.close()
        except Exception as error:
            log.error("closing %s failed: %s", type(self.root).__qualname__, error, exc_info=error)

    @contextmanager
    def serve_unix(self) -> Iterator[str]:
        """Serve on a private unix socket from a background event loop; yields the socket's path."""
        from jumpstarter.exporter.server import serving

        with tempfile.TemporaryDirectory(prefix="jumpstarter-") as tmp, start_blocking_portal() as portal:
            path = str(Path(tmp) / "exporter.sock")
            with portal.wrap_async_context_manager(serving(self.root, f"unix://{path}", session=self)):
                yield path

    def update_status(self, status: int, message: str = "") -> None:
        """Set the status GetStatus reports (direct mode is always ready; upstream's tests set it so)."""
        self.status = int(status)

    def where(self, uuid: str, method: str) -> str:
        path = self.paths.get(uuid, "")
        return f"{path}.{method}" if path else method

    # Logging -----------------------------------------------------------------

    def start_logging(self) -> None:
        logging.getLogger("jumpstarter.drivers").addHandler(self._log_handler)

    def stop_logging(self) -> None:
        logging.getLogger("jumpstarter.drivers").removeHandler(self._log_handler)

    def publish(self, record: logging.LogRecord) -> None:
        with self._log_lock:
            subscribers = list(self._log_subscribers)
        if not subscribers:
            return
        response = self._log_response(record)
        for loop, queue in subscribers:
            loop.call_soon_threadsafe(_offer, queue, response)

    def _log_response(self, record: logging.LogRecord) -> jumpstarter_pb2.LogStreamResponse:
        uuid = getattr(record, "driver_uuid", None) or str(self.root.uuid)
        driver_type = record.name.removeprefix("jumpstarter.drivers.")
        stamp = Timestamp()
        stamp.FromNanoseconds(int(record.created * 1e9))
        return jumpstarter_pb2.LogStreamResponse(
            uuid=uuid,
            severity=record.levelname,
            message=record.getMessage(),
            source=common_pb2.LOG_SOURCE_DRIVER,
            driver_type=driver_type,
            timestamp=stamp,
        )

    # ExporterService -----------------------------------------------------------

    async def GetReport(self, request: Empty, context: ServicerContext) -> jumpstarter_pb2.GetReportResponse:
        return jumpstarter_pb2.GetReportResponse(uuid=str(self.root.uuid), labels=self.labels, reports=self.reports)

    async def DriverCall(
        self, request: jumpstarter_pb2.DriverCallRequest, context: ServicerContext
    ) -> jumpstarter_pb2.DriverCallResponse:
        info, func = await self._lookup(request.uuid, request.method, CALL, context)
        where = self.where(request.uuid, request.method)
        args = await self._arguments(info, request, context)
        try:
            if info.is_async:
                result = await func(*args)
            else:
                result = await run_in_worker(func, *args)
        except Exception as exc:
            await self._fail(exc, where, context)
        finally:
            self._end_uploads(request.uuid, args)
        response = jumpstarter_pb2.DriverCallResponse(uuid=str(uuid4()))
        await self._encode(result, response, where, context)
        return response

    async def StreamingDriverCall(
        self, request: jumpstarter_pb2.StreamingDriverCallRequest, context: ServicerContext
    ) -> AsyncIterator[jumpstarter_pb2.StreamingDriverCallResponse]:
        info, func = await self._lookup(request.uuid, request.method, STREAMING, context)
        where = self.where(request.uuid, request.method)
        args = await self._arguments(info, request, context)
        items = _aiter_async(func, args) if info.is_async else iterate_in_thread(func, args, where)
        try:
            while True:
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    await self._fail(exc, where, context)
                response = jumpstarter_pb2.StreamingDriverCallResponse(uuid=str(uuid4()))
                await self._encode(item, response, where, context)
                yield response
        finally:
            await items.aclose()
            self._end_uploads(request.uuid, args)

    async def LogStream(
        self, request: Empty, context: ServicerContext
    ) -> AsyncIterator[jumpstarter_pb2.LogStreamResponse]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(_LOG_QUEUE)
        entry = (loop, queue)
        with self._log_lock:
            self._log_subscribers.add(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            with self._log_lock:
                self._log_subscribers.discard(entry)

    async def Reset(
        self, request: jumpstarter_pb2.ResetRequest, context: ServicerContext
    ) -> jumpstarter_pb2.ResetResponse:
        try:
            await run_in_worker(self.root.reset)
        except Exception as exc:
            await self._fail(exc, "reset", context)
        return jumpstarter_pb2.ResetResponse()

    async def GetStatus(
        self, request: jumpstarter_pb2.GetStatusRequest, context: ServicerContext
    ) -> jumpstarter_pb2.GetStatusResponse:
        return jumpstarter_pb2.GetStatusResponse(
            status=self.status,  # type: ignore[arg-type]  # an enum field takes its number; the stub wants the enum
            message="direct mode",
            status_version=1,
        )

    async def EndSession(
        self, request: jumpstarter_pb2.EndSessionRequest, context: ServicerContext
    ) -> jumpstarter_pb2.EndSessionResponse:
        return jumpstarter_pb2.EndSessionResponse(success=True)

    # RouterService -----------------------------------------------------------

    async def Stream(self, request_iterator: AsyncIterator[router_pb2.StreamRequest], context: ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        try:
            request = json.loads(metadata.get("request", ""))
            kind, uuid, method = request.get("kind"), request.get("uuid", ""), request.get("method", "")
        except (ValueError, AttributeError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream: metadata 'request' must be a JSON object")
        if kind == "resource":
            return await self._receive_resource(uuid, request_iterator, context)
        if kind != "driver":
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, f"stream kind {kind!r} is not supported (only 'driver' and 'resource')"
            )
        info, func = await self._lookup(uuid, method, STREAM, context)
        where = self.where(uuid, method)
        try:
            opened = func()
            stream = await opened.__aenter__()
        except Exception as exc:
            await self._fail(exc, where, context)
        try:
            # Upstream clients wait for the response headers before they send: announce the open stream.
            await context.send_initial_metadata(())
            await _pump(stream, request_iterator, context)
        finally:
            await opened.__aexit__(None, None, None)

    async def _receive_resource(
        self, uuid: str, request_iterator: AsyncIterator[router_pb2.StreamRequest], context: ServicerContext
    ) -> None:
        """An upload from the client: its bytes wait for the driver under a handle, which the headers carry.

        The client passes the handle to a driver call, which reads the bytes with ``Driver.resource()``;
        the call ends once the driver is done with them. Content encodings are not accepted, so clients
        send plain bytes (upstream's client decompresses on its side when told so).
        """
        driver = self.drivers.get(uuid)
        if driver is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no driver with uuid {uuid!r} on this exporter")
        upload = Upload()
        key = str(uuid4())
        handle = {"kind": "client_stream", "uuid": key, "x_jmp_content_encoding": None}
        driver.resources[key] = upload
        try:
            await context.send_initial_metadata((("resource", json.dumps(handle)),))
            async with anyio.create_task_group() as tg:
                tg.start_soon(_fill, upload, request_iterator)
                async for reply in upload.outgoing:  # until the driver is done with it
                    await context.write(router_pb2.StreamResponse(payload=bytes(reply), frame_type=_DATA))
                tg.cancel_scope.cancel()
            await context.write(router_pb2.StreamResponse(frame_type=_GOAWAY))
        finally:
            driver.resources.pop(key, None)
            await upload.close()

    def _end_uploads(self, uuid: str, args: list[Any]) -> None:
        """A call has ended: the uploads whose handles it was given end too, read or not (so that a client
        waiting for the rest of what the driver sent back isn't left waiting by a call that never opened it)."""
        driver = self.drivers.get(uuid)
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

    # Helpers -------------------------------------------------------------------

    async def _lookup(
        self, uuid: str, method: str, kind: str, context: ServicerContext
    ) -> tuple[Exported, Callable[..., Any]]:
        driver = self.drivers.get(uuid)
        if driver is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no driver with uuid {uuid!r} on this exporter")
        found = driver.method(method)
        if found is None:
            names = sorted(n for n in dir(type(driver)) if not n.startswith("_"))
            reason = "is not exported (mark it @export)" if method in names else "does not exist"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"method {method!r} of {type(driver).__qualname__} {reason}")
        info, func = found
        if info.kind != kind:
            how = {CALL: "call()", STREAMING: "streamingcall()", STREAM: "stream()"}
            await context.abort(  # NOT_FOUND, as upstream answers: not exported for this kind of call
                grpc.StatusCode.NOT_FOUND,
                f"{method!r} is reached with {how[info.kind]}, not {how[kind]}",
            )
        return info, func

    async def _arguments(self, info: Exported, request: Any, context: ServicerContext) -> list[Any]:
        try:
            return info.signature.bind(decode_args(request))
        except ArgumentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _encode(self, result: Any, response: Any, where: str, context: ServicerContext) -> None:
        try:
            encode_result(result, response)
        except ValueTypeError as exc:
            log.error("%s returned a value that can't be sent: %s", where, exc)
            await context.abort(grpc.StatusCode.UNKNOWN, f"the driver returned a value that can't be sent: {exc}")

    async def _fail(self, exc: Exception, where: str, context: ServicerContext) -> NoReturn:
        code = status_for(exc)
        if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
            log.error("%s raised %s", where, type(exc).__name__, exc_info=exc)
        else:
            log.info("%s raised %s: %s", where, type(exc).__name__, exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            context.set_trailing_metadata(((DRIVER_ERROR_KEY, type(exc).__name__),))
        await context.abort(code, message_for(exc))


async def _aiter_async(func: Callable[..., AsyncGenerator[Any, None]], args: list[Any]) -> AsyncGenerator[Any, None]:
    agen = func(*args)
    try:
        async for item in agen:
            yield item
    finally:
        await agen.aclose()


def _offer(queue: asyncio.Queue, item: Any) -> None:
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        pass  # a subscriber that doesn't read loses records rather than stalling drivers


class _ForwardingHandler(logging.Handler):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.session.publish(record)
        except Exception:
            self.handleError(record)


async def _fill(upload: Upload, request_iterator: AsyncIterator[router_pb2.StreamRequest]) -> None:
    async with upload.writer:  # closed at the client's end: the driver's reading ends there too
        await _frames_into(upload.writer, request_iterator)


async def _frames_into(stream: Any, request_iterator: AsyncIterator[router_pb2.StreamRequest]) -> None:
    """Send the payloads of the client's DATA frames to ``stream`` until its GOAWAY or the end of its side."""
    async for frame in request_iterator:
        if frame.frame_type == _DATA:
            await stream.send(frame.payload)
        elif frame.frame_type in (_GOAWAY, router_pb2.FRAME_TYPE_RST_STREAM):
            break


async def _pump(
    stream: Any, request_iterator: AsyncIterator[router_pb2.StreamRequest], context: ServicerContext
) -> None:
    """Copy frames between a gRPC Stream call and a driver's anyio stream, both ways."""

    async def inbound() -> None:
        await _frames_into(stream, request_iterator)
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
                await context.write(router_pb2.StreamResponse(payload=bytes(data), frame_type=_DATA))
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        await context.write(router_pb2.StreamResponse(frame_type=_GOAWAY))

    async with anyio.create_task_group() as tg:
        tg.start_soon(inbound)
        await outbound()
