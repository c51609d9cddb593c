"""The gRPC services of an exporter, dispatching to a tree of drivers."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from anyio.from_thread import start_blocking_portal
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from jumpstarter.common.frames import RAW, REQUESTS
from jumpstarter.common.secrets import redact
from jumpstarter.common.textcalls import TextCall, TextReply, reply
from jumpstarter.common.wire import BATCH_KEY, LEASE_KEY, RAW_KEY
from jumpstarter.driver.base import Driver, Exported, close_drivers, exported_methods
from jumpstarter.driver.decorators import CALL, STREAM, STREAMING
from jumpstarter.exporter.batches import asked_too_much, close_with_call, responses
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.generators import DEFAULT_LOOKAHEAD, MAX_ASK_AHEAD, Producer
from jumpstarter.exporter.limits import Limits
from jumpstarter.exporter.readers import let_end
from jumpstarter.exporter.replies import encode_or_fail, fail, refuse, reply_id
from jumpstarter.exporter.threaded import Stragglers, run_in_worker
from jumpstarter.exporter.uploads import Uploads, end_uploads, pump
from jumpstarter.signature import ArgumentError, Signature
from jumpstarter.v1 import (
    common_pb2,
    jumpstarter_pb2,
    jumpstarter_pb2_grpc,
    paced_pb2,
    paced_pb2_grpc,
    router_pb2_grpc,
)
from jumpstarter.values import (
    MalformedValue,
    decode_args,
)

log = logging.getLogger("jumpstarter.exporter")
# The loggers of the config's hooks' output (jumpstarter.exporter.hooks.output_log), as upstream's log sources.
HOOK_SOURCES = {
    "jumpstarter.drivers.beforeLease": common_pb2.LOG_SOURCE_BEFORE_LEASE_HOOK,
    "jumpstarter.drivers.afterLease": common_pb2.LOG_SOURCE_AFTER_LEASE_HOOK,
}

_END = object()
_LOG_QUEUE = 1000  # records kept per LogStream subscriber before dropping


class Session(
    jumpstarter_pb2_grpc.ExporterServiceServicer,
    router_pb2_grpc.RouterServiceServicer,
    paced_pb2_grpc.PacedCallServiceServicer,
):
    """Serves one driver tree. ``labels`` become the exporter's labels in GetReport."""

    def __init__(
        self,
        root: Driver | None = None,
        labels: dict[str, str] | None = None,
        *,
        root_device: Driver | None = None,
        limits: Limits | None = None,
    ) -> None:
        root = root or root_device  # upstream's keyword
        if root is None:
            raise TypeError("Session needs the root driver")
        self.root = root
        self.limits = limits or Limits.from_env()
        self.uploads = Uploads(self.limits)
        self.stragglers = Stragglers()  # sync calls running on after their caller gave up: the board is busy
        self.status: int = common_pb2.EXPORTER_STATUS_LEASE_READY
        self.holders: Any = None  # the config's hooks (jumpstarter.exporter.holders): their status, if any
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
            report = driver.report(parent=parent, name=name)
            exported = exported_methods(type(driver))
            report.exported_methods.extend(sorted(exported))  # all of them, help or not (inspect, j)
            for info in exported.values():  # our clients pace these (PacedCallService)
                if info.lookahead is not None:
                    report.methods_lookahead[info.name] = info.lookahead
            self.reports.append(report)
        self._log_subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()
        self._log_lock = threading.Lock()
        self._log_handler = _ForwardingHandler(self)

    # Upstream's in-process use: ``with Session(root_device=d) as s, s.serve_unix() as path:`` ---------

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        close_drivers(self.root)  # every driver, each failure logged

    @contextmanager
    def serve_unix(self) -> Iterator[str]:
        """Serve on a private unix socket from a background event loop; yields the socket's path."""
        import tempfile  # here, not at start-up: see jumpstarter.cli.default_socket

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
            message=redact(record.getMessage()),  # to clients: no credential a driver logged
            source=HOOK_SOURCES.get(record.name, common_pb2.LOG_SOURCE_DRIVER),
            driver_type=driver_type,
            timestamp=stamp,
        )

    # ExporterService -----------------------------------------------------------

    async def GetReport(self, request: Empty, context: ServicerContext) -> jumpstarter_pb2.GetReportResponse:
        return jumpstarter_pb2.GetReportResponse(uuid=str(self.root.uuid), labels=self.labels, reports=self.reports)

    async def DriverCall(
        self, request: jumpstarter_pb2.DriverCallRequest | TextCall, context: ServicerContext
    ) -> jumpstarter_pb2.DriverCallResponse | TextReply:
        """A unary call. A request or result of big text is read or written by hand (jumpstarter.common.textcalls)."""
        info, func = await self._lookup(request.uuid, request.method, CALL, context)
        args = await self._arguments(info, request, context)
        try:
            if info.is_async:
                result = await func(*args)
            else:
                where = self.where(request.uuid, request.method)
                result = await run_in_worker(func, *args, stragglers=self.stragglers, what=where)
        except Exception as exc:
            await fail(exc, self.where(request.uuid, request.method), context)
        finally:
            end_uploads(self.drivers.get(request.uuid), args)
        uuid = reply_id()
        text = reply(uuid, result)
        if text is not None:
            return text
        response = jumpstarter_pb2.DriverCallResponse(uuid=uuid)
        await encode_or_fail(result, response, self.where(request.uuid, request.method), context)
        return response

    async def StreamingDriverCall(
        self, request: jumpstarter_pb2.StreamingDriverCallRequest, context: ServicerContext
    ) -> AsyncIterator[jumpstarter_pb2.StreamingDriverCallResponse]:
        """A generator's items: one per message, or batches for a client that asked for them in metadata.
        The client can't say what it has taken: the generator runs ahead of what was sent (generators.py)."""
        info, func = await self._lookup(request.uuid, request.method, STREAMING, context)
        where = self.where(request.uuid, request.method)
        args = await self._arguments(info, request, context)
        lookahead = DEFAULT_LOOKAHEAD if info.lookahead is None else info.lookahead
        batches = any(key == BATCH_KEY for key, _ in context.invocation_metadata() or ())
        producer = Producer(func, args, info.is_async, 1 + lookahead, where, self.stragglers)
        close_with_call(producer, context)
        try:
            async for response in responses(producer, batches, lookahead, where, context):
                yield response
        finally:
            await producer.aclose()
            end_uploads(self.drivers.get(request.uuid), args)

    async def PacedStreamingDriverCall(
        self, request_iterator: AsyncIterator[paced_pb2.PacedRequest], context: ServicerContext
    ) -> AsyncIterator[jumpstarter_pb2.StreamingDriverCallResponse]:
        """A StreamingDriverCall whose client says how many items it has asked for: the generator runs at
        most its lookahead beyond that (PacedCallService, for methods that declared one)."""
        requests = aiter(request_iterator)
        try:
            first = await anext(requests, None)
        except DecodeError as exc:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed PacedRequest: {exc}")
        if first is None or not first.HasField("call"):
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "a paced call's first request carries the call")
        request = first.call
        info, func = await self._lookup(request.uuid, request.method, STREAMING, context)
        where = self.where(request.uuid, request.method)
        args = await self._arguments(info, request, context)
        lookahead = DEFAULT_LOOKAHEAD if info.lookahead is None else info.lookahead
        if first.wanted > MAX_ASK_AHEAD:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(asked_too_much(first.wanted, 0, where)))
        producer = Producer(func, args, info.is_async, max(first.wanted, 1) + lookahead, where, self.stragglers)
        close_with_call(producer, context)
        progress = [0]  # the items sent so far

        async def asked() -> None:
            try:
                async for more in requests:
                    if more.wanted > progress[0] + MAX_ASK_AHEAD:
                        producer.refuse(asked_too_much(more.wanted, progress[0], where))
                        return
                    producer.allow(more.wanted + lookahead)
            except Exception:
                pass  # the call has ended: what it ended with is the responses' to report

        reader = asyncio.create_task(asked())
        try:
            async for response in responses(producer, True, None, where, context, progress):
                yield response
        finally:
            let_end(reader)  # not cancelled: see exporter/readers.py
            await producer.aclose()
            end_uploads(self.drivers.get(request.uuid), args)

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
            await run_in_worker(self.root.reset, stragglers=self.stragglers, what="reset")
        except Exception as exc:
            await fail(exc, "reset", context)
        return jumpstarter_pb2.ResetResponse()

    async def GetStatus(
        self, request: jumpstarter_pb2.GetStatusRequest, context: ServicerContext
    ) -> jumpstarter_pb2.GetStatusResponse:
        if self.holders is None:
            return jumpstarter_pb2.GetStatusResponse(
                status=self.status,  # type: ignore[arg-type]  # an enum field takes its number; the stub wants the enum
                message="direct mode",
                status_version=1,
            )
        leased = bool(dict(context.invocation_metadata() or ()).get(LEASE_KEY))
        status, message, version, previous = self.holders.get_status(leased, context.peer())
        return jumpstarter_pb2.GetStatusResponse(
            status=status, message=message, status_version=version, previous_status=previous
        )

    async def EndSession(
        self, request: jumpstarter_pb2.EndSessionRequest, context: ServicerContext
    ) -> jumpstarter_pb2.EndSessionResponse:
        if self.holders is not None and not dict(context.invocation_metadata() or ()).get(LEASE_KEY):
            self.holders.end_session()
        return jumpstarter_pb2.EndSessionResponse(success=True)

    # RouterService -----------------------------------------------------------

    async def Stream(self, request_iterator: AsyncIterator[bytes], context: ServicerContext) -> None:
        """A driver's byte stream, or an upload: messages as bytes, framed or (a driver's stream, when the client
        asks) not (see jumpstarter.common.frames)."""
        metadata = dict(context.invocation_metadata() or ())
        try:
            request = json.loads(metadata.get("request", ""))
            kind, uuid, method = request.get("kind", ""), request.get("uuid", ""), request.get("method", "")
        except (ValueError, AttributeError):
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "stream: metadata 'request' must be a JSON object")
        for name, field in (("kind", kind), ("uuid", uuid), ("method", method)):
            if not isinstance(field, str):
                why = f"stream: metadata 'request': {name!r} must be a string, got {type(field).__name__}"
                await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, why)
        if kind == "resource":
            driver = self.drivers.get(uuid)
            if driver is None:
                await refuse(context, grpc.StatusCode.NOT_FOUND, f"no driver with uuid {uuid!r:.80} on this exporter")
            return await self.uploads.receive(driver, request_iterator, context)
        if kind != "driver":
            why = f"stream kind {kind!r:.80} is not supported (only 'driver' and 'resource')"
            await refuse(context, grpc.StatusCode.UNIMPLEMENTED, why)
        info, func = await self._lookup(uuid, method, STREAM, context)
        where = self.where(uuid, method)
        raw = metadata.get(RAW_KEY) == "1"
        try:
            opened = func()
            stream = await opened.__aenter__()
        except Exception as exc:
            await fail(exc, where, context)
        try:
            # Upstream clients wait for the response headers before they send: announce the open stream (and say
            # yes to a client that asked for no frames: it waits for them too).
            await context.send_initial_metadata(((RAW_KEY, "1"),) if raw else ())
            await pump(stream, request_iterator, context, RAW if raw else REQUESTS)
        finally:
            await opened.__aexit__(None, None, None)

    # Helpers -------------------------------------------------------------------

    async def _lookup(
        self, uuid: str, method: str, kind: str, context: ServicerContext
    ) -> tuple[Exported, Callable[..., Any]]:
        driver = self.drivers.get(uuid)
        if driver is None:
            await refuse(context, grpc.StatusCode.NOT_FOUND, f"no driver with uuid {uuid!r:.80} on this exporter")
        found = driver.method(method)
        if found is None:
            names = sorted(n for n in dir(type(driver)) if not n.startswith("_"))
            reason = "is not exported (mark it @export)" if method in names else "does not exist"
            message = f"method {method!r:.80} of {type(driver).__qualname__} {reason}"
            await refuse(context, grpc.StatusCode.NOT_FOUND, message)
        info, func = found
        if info.kind != kind:
            how = {CALL: "call()", STREAMING: "streamingcall()", STREAM: "stream()"}
            await refuse(  # NOT_FOUND, as upstream answers: not exported for this kind of call
                context,
                grpc.StatusCode.NOT_FOUND,
                f"{method!r} is reached with {how[info.kind]}, not {how[kind]}",
            )
        return info, func

    async def _arguments(self, info: Exported, request: Any, context: ServicerContext) -> list[Any]:
        """The call's arguments, decoded and converted; a big request is decoded in a worker thread, so that the
        event loop goes on serving other callers meanwhile (decoding a million small values takes seconds)."""
        try:
            if type(request) is TextCall:  # str arguments, already decoded
                return info.signature.bind(request.args)
            if _light(request):
                return info.signature.bind(decode_args(request))
            return await run_in_worker(_bound, info.signature, request)
        except (ArgumentError, MalformedValue) as exc:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))


# A request of more values than this is decoded off the event loop (see Session._arguments): counting them
# costs a small call about a microsecond, a thread hop some fifty.
DECODE_INLINE = 1000


def _light(request: Any, budget: int = DECODE_INLINE) -> bool:
    """Whether ``request``'s arguments hold at most ``budget`` values (counted no further than that)."""
    args = request.args
    if len(args) > budget or (request.HasField("int_paths") and len(request.int_paths.paths) > budget):
        return False
    budget -= len(args)
    stack = list(args)
    while stack:
        value = stack.pop()
        kind = value.WhichOneof("kind")
        if kind == "list_value":
            items = value.list_value.values
        elif kind == "struct_value":
            items = value.struct_value.fields.values()
        else:
            continue
        budget -= len(items)
        if budget < 0:
            return False
        stack.extend(items)
    return True


def _bound(signature: Signature, request: Any) -> list[Any]:
    return signature.bind(decode_args(request))


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
