"""The gRPC services of an exporter, dispatching to a tree of drivers."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from uuid import uuid4

import anyio
import grpc
from anyio.from_thread import start_blocking_portal
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from jumpstarter.common.frames import RAW, REQUESTS, Framing
from jumpstarter.common.secrets import redact, redacted_traceback
from jumpstarter.common.textcalls import TextCall, TextReply, reply
from jumpstarter.common.wire import BATCH_KEY, RAW_KEY
from jumpstarter.driver.base import Driver, Exported, Upload, UploadBudget, close_drivers, exported_methods
from jumpstarter.driver.decorators import CALL, STREAM, STREAMING
from jumpstarter.errors import DRIVER_ERROR_KEY, message_for, status_for
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.generators import (
    DEFAULT_LOOKAHEAD,
    ERROR,
    ITEM,
    MAX_ASK_AHEAD,
    AskedTooMuch,
    Producer,
)
from jumpstarter.exporter.limits import MAX_UPLOADS_ENV, Limits
from jumpstarter.exporter.threaded import Stragglers, run_in_worker
from jumpstarter.signature import ArgumentError, Signature
from jumpstarter.v1 import (
    common_pb2,
    jumpstarter_pb2,
    jumpstarter_pb2_grpc,
    paced_pb2,
    paced_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)
from jumpstarter.values import (
    MAX_DEPTH,
    MalformedValue,
    ValueTypeError,
    decode_args,
    encode,
    encode_result,
    pack_paths,
)
from jumpstarter.values import Path as ValuePath

log = logging.getLogger("jumpstarter.exporter")

_END = object()
_DATA, _GOAWAY = router_pb2.FRAME_TYPE_DATA, router_pb2.FRAME_TYPE_GOAWAY
_LOG_QUEUE = 1000  # records kept per LogStream subscriber before dropping
# A batch (StreamingDriverCallResponse.items) ends at this many items or once past this many bytes: a
# fast generator's items share messages, a big item goes alone.
BATCH_ITEMS = 256
BATCH_BYTES = 256 * 1024


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
        self.uploads = UploadBudget(self.limits.upload_buffer, self.limits.upload_memory)
        self.stragglers = Stragglers()  # sync calls running on after their caller gave up: the board is busy
        self._uploads_open = 0
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
            report = driver.report(parent=parent, name=name)
            for info in exported_methods(type(driver)).values():  # our clients pace these (PacedCallService)
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
            source=common_pb2.LOG_SOURCE_DRIVER,
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
            await self._fail(exc, self.where(request.uuid, request.method), context)
        finally:
            self._end_uploads(request.uuid, args)
        uuid = reply_id()
        text = reply(uuid, result)
        if text is not None:
            return text
        response = jumpstarter_pb2.DriverCallResponse(uuid=uuid)
        try:
            encode_result(result, response)
        except ValueTypeError as exc:
            await _unsendable(exc, self.where(request.uuid, request.method), context)
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
        producer = Producer(func, args, info.is_async, 1 + lookahead, where)
        _close_with_call(producer, context)
        try:
            async for response in self._items(producer, batches, lookahead, where, context):
                yield response
        finally:
            await producer.aclose()
            self._end_uploads(request.uuid, args)

    async def PacedStreamingDriverCall(
        self, request_iterator: AsyncIterator[paced_pb2.PacedRequest], context: ServicerContext
    ) -> AsyncIterator[jumpstarter_pb2.StreamingDriverCallResponse]:
        """A StreamingDriverCall whose client says how many items it has asked for: the generator runs at
        most its lookahead beyond that (PacedCallService, for methods that declared one)."""
        requests = aiter(request_iterator)
        try:
            first = await anext(requests, None)
        except DecodeError as exc:
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed PacedRequest: {exc}")
        if first is None or not first.HasField("call"):
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "a paced call's first request carries the call")
        request = first.call
        info, func = await self._lookup(request.uuid, request.method, STREAMING, context)
        where = self.where(request.uuid, request.method)
        args = await self._arguments(info, request, context)
        lookahead = DEFAULT_LOOKAHEAD if info.lookahead is None else info.lookahead
        if first.wanted > MAX_ASK_AHEAD:
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(_asked_too_much(first.wanted, 0, where)))
        producer = Producer(func, args, info.is_async, max(first.wanted, 1) + lookahead, where)
        _close_with_call(producer, context)
        progress = [0]  # the items sent so far

        async def asked() -> None:
            try:
                async for more in requests:
                    if more.wanted > progress[0] + MAX_ASK_AHEAD:
                        producer.refuse(_asked_too_much(more.wanted, progress[0], where))
                        return
                    producer.allow(more.wanted + lookahead)
            except Exception:
                pass  # the call has ended: what it ended with is the responses' to report

        reader = asyncio.create_task(asked())
        try:
            async for response in self._items(producer, True, None, where, context, progress):
                yield response
        finally:
            reader.cancel()
            await asyncio.wait({reader})
            await producer.aclose()
            self._end_uploads(request.uuid, args)

    async def _items(
        self,
        producer: Producer,
        batches: bool,
        lookahead: int | None,
        where: str,
        context: ServicerContext,
        progress: list[int] | None = None,
    ) -> AsyncIterator[jumpstarter_pb2.StreamingDriverCallResponse]:
        """The responses of a streaming call: what the producer has ready, waiting only for the first item.
        ``lookahead``: let the producer run that far beyond what was sent (None: the client paces it).
        ``progress[0]``: kept at the items sent."""
        sent = 0
        while True:
            entries = await producer.take(BATCH_ITEMS if batches else 1)
            items = [value for kind, value, _ in entries if kind == ITEM]
            if items:
                if batches:
                    responses, unsendable = _batches(items)
                    for response in responses:
                        yield response
                    if unsendable is not _NOTHING:  # fails the call as unbatched, after the items before it
                        await self._encode(unsendable, jumpstarter_pb2.StreamingDriverCallResponse(), where, context)
                else:
                    response = jumpstarter_pb2.StreamingDriverCallResponse(uuid=reply_id())
                    await self._encode(items[0], response, where, context)
                    yield response
                sent += len(items)
                if progress is not None:
                    progress[0] = sent
                if lookahead is not None:
                    producer.allow(sent + 1 + lookahead)
            if len(items) < len(entries):  # the end, last of the entries
                kind, value, _ = entries[-1]
                if isinstance(value, AskedTooMuch):
                    await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(value))
                if kind == ERROR:
                    await self._fail(value, where, context)
                return

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

    async def Stream(self, request_iterator: AsyncIterator[bytes], context: ServicerContext) -> None:
        """A driver's byte stream, or an upload: messages as bytes, framed or (a driver's stream, when the client
        asks) not (see jumpstarter.common.frames)."""
        metadata = dict(context.invocation_metadata() or ())
        try:
            request = json.loads(metadata.get("request", ""))
            kind, uuid, method = request.get("kind", ""), request.get("uuid", ""), request.get("method", "")
        except (ValueError, AttributeError):
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "stream: metadata 'request' must be a JSON object")
        for name, field in (("kind", kind), ("uuid", uuid), ("method", method)):
            if not isinstance(field, str):
                why = f"stream: metadata 'request': {name!r} must be a string, got {type(field).__name__}"
                await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, why)
        if kind == "resource":
            return await self._receive_resource(uuid, request_iterator, context)
        if kind != "driver":
            why = f"stream kind {kind!r:.80} is not supported (only 'driver' and 'resource')"
            await _refuse(context, grpc.StatusCode.UNIMPLEMENTED, why)
        info, func = await self._lookup(uuid, method, STREAM, context)
        where = self.where(uuid, method)
        raw = metadata.get(RAW_KEY) == "1"
        try:
            opened = func()
            stream = await opened.__aenter__()
        except Exception as exc:
            await self._fail(exc, where, context)
        try:
            # Upstream clients wait for the response headers before they send: announce the open stream (and say
            # yes to a client that asked for no frames: it waits for them too).
            await context.send_initial_metadata(((RAW_KEY, "1"),) if raw else ())
            await _pump(stream, request_iterator, context, RAW if raw else REQUESTS)
        finally:
            await opened.__aexit__(None, None, None)

    async def _receive_resource(
        self, uuid: str, request_iterator: AsyncIterator[bytes], context: ServicerContext
    ) -> None:
        """An upload from the client: its bytes wait for the driver under a handle, which the headers carry.

        The client passes the handle to a driver call, which reads the bytes with ``Driver.resource()``;
        the call ends once the driver is done with them. Content encodings are not accepted, so clients
        send plain bytes (upstream's client decompresses on its side when told so).
        """
        driver = self.drivers.get(uuid)
        if driver is None:
            await _refuse(context, grpc.StatusCode.NOT_FOUND, f"no driver with uuid {uuid!r:.80} on this exporter")
        if self._uploads_open >= self.limits.max_uploads:
            why = (
                f"this exporter has {self._uploads_open} uploads open, the most it takes at once: end one first, "
                f"or raise the limit (jumpstarter run --max-uploads, or {MAX_UPLOADS_ENV})"
            )
            await _refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, why)
        upload = Upload(self.uploads)
        key = str(uuid4())
        handle = {"kind": "client_stream", "uuid": key, "x_jmp_content_encoding": None}
        driver.resources[key] = upload
        self._uploads_open += 1
        malformed: BaseException | None = None
        try:
            await context.send_initial_metadata((("resource", json.dumps(handle)),))
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_fill, upload, request_iterator, self.limits.upload_chunk)
                    async for reply in upload.outgoing:  # until the driver is done with it
                        await context.write(REQUESTS.encode(reply))
                    tg.cancel_scope.cancel()
            except* _MalformedFrame as group:
                malformed = group.exceptions[0]
            else:
                await context.write(REQUESTS.goaway)
        finally:
            self._uploads_open -= 1
            driver.resources.pop(key, None)
            await upload.close()
        if malformed is not None:
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(malformed))

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
            await _refuse(context, grpc.StatusCode.NOT_FOUND, f"no driver with uuid {uuid!r:.80} on this exporter")
        found = driver.method(method)
        if found is None:
            names = sorted(n for n in dir(type(driver)) if not n.startswith("_"))
            reason = "is not exported (mark it @export)" if method in names else "does not exist"
            message = f"method {method!r:.80} of {type(driver).__qualname__} {reason}"
            await _refuse(context, grpc.StatusCode.NOT_FOUND, message)
        info, func = found
        if info.kind != kind:
            how = {CALL: "call()", STREAMING: "streamingcall()", STREAM: "stream()"}
            await _refuse(  # NOT_FOUND, as upstream answers: not exported for this kind of call
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
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _encode(self, result: Any, response: Any, where: str, context: ServicerContext) -> None:
        try:
            encode_result(result, response)
        except ValueTypeError as exc:
            await _unsendable(exc, where, context)

    async def _fail(self, exc: Exception, where: str, context: ServicerContext) -> NoReturn:
        """A driver's failure, to its client and the exporter's log, credentials redacted from both: a driver's
        message (or an exception it chained) may quote a signed URL, a password or a token."""
        code = status_for(exc)
        if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
            log.error("%s raised %s\n%s", where, type(exc).__name__, redacted_traceback(exc))
        else:
            log.info("%s raised %s: %s", where, type(exc).__name__, redact(str(exc)))
        if code == grpc.StatusCode.UNAVAILABLE:
            context.set_trailing_metadata(((DRIVER_ERROR_KEY, type(exc).__name__),))
        await context.abort(code, redact(message_for(exc)))


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


def _close_with_call(producer: Producer, context: ServicerContext) -> None:
    """Stop ``producer`` as soon as the call ends, however it ends: a cancelled call (or a client gone) may leave
    the call's own code waiting inside gRPC, its ``finally`` for later."""
    context.add_done_callback(lambda _call: producer.close())


def _asked_too_much(wanted: int, sent: int, where: str) -> AskedTooMuch:
    return AskedTooMuch(
        f"{where}: a paced call asked for {wanted} items with {sent} sent; it may ask for at most {MAX_ASK_AHEAD} "
        "beyond those sent (jumpstarter.exporter.generators.MAX_ASK_AHEAD)"
    )


def _bound(signature: Signature, request: Any) -> list[Any]:
    return signature.bind(decode_args(request))


async def _unsendable(exc: ValueTypeError, where: str, context: ServicerContext) -> NoReturn:
    log.error("%s returned a value that can't be sent: %s", where, exc)
    await context.abort(grpc.StatusCode.UNKNOWN, f"the driver returned a value that can't be sent: {exc}")


# A response's ``uuid`` (upstream's exporter puts a fresh uuid4 there; no client reads it): a uuid4 made once, its
# last twelve digits a counter. uuid4() per response took some 10 us of a unary call's time on the event loop.
_REPLY_PREFIX = str(uuid4())[:24]
_replies = itertools.count()


def reply_id() -> str:
    """A uuid4-shaped id, different for each response of this process (until 16**12 of them)."""
    return f"{_REPLY_PREFIX}{next(_replies) & 0xFFFF_FFFF_FFFF:012x}"


async def _refuse(context: ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End a request that can't be served as asked, with one line in the log (no traceback: nothing broke here)."""
    log.info("refused a request: %s", message)
    await context.abort(code, message)


_NOTHING = object()


def _batches(items: list[Any]) -> tuple[list[jumpstarter_pb2.StreamingDriverCallResponse], Any]:
    """``items`` encoded into batches of at most BATCH_BYTES (or one bigger item each); and the first item
    that can't be sent (_NOTHING when all can), which ends them."""
    responses = []
    response, size = jumpstarter_pb2.StreamingDriverCallResponse(), 0
    ints: list[ValuePath] = []
    i = 0
    while i < len(items):
        values = response.items
        index, mark = len(values), len(ints)
        value = values.add()
        try:
            encode(items[i], value, ints, (index,), MAX_DEPTH + 1)  # the path's first step is the item's index
        except ValueTypeError:
            del values[-1]
            if index:
                _pack(response, ints[:mark])
                responses.append(response)
            return responses, items[i]
        size += value.ByteSize()
        if size > BATCH_BYTES and index:  # too much with this one: it goes first in the next message
            del values[-1]
            _pack(response, ints[:mark])
            responses.append(response)
            response, ints, size = jumpstarter_pb2.StreamingDriverCallResponse(), [], 0
            continue
        i += 1
    _pack(response, ints)
    responses.append(response)
    return responses, _NOTHING


def _pack(response: jumpstarter_pb2.StreamingDriverCallResponse, ints: list[ValuePath]) -> None:
    if ints:
        pack_paths(ints, response.int_paths)


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


async def _fill(upload: Upload, request_iterator: AsyncIterator[bytes], most: int) -> None:
    try:
        async with upload.writer:  # closed at the client's end: the driver's reading ends there too
            await _frames_into(upload, request_iterator, REQUESTS, most)
    except BaseException as exc:
        # A cancelled upload's exception sits in a reference cycle: the frames of its traceback would hold the
        # upload and the chunk in hand until the cyclic collector runs. They are of no use now: clear them.
        traceback.clear_frames(exc.__traceback__)
        del upload, request_iterator
        raise


class _MalformedFrame(ValueError):
    """A frame of a Stream call that doesn't parse, or is bigger than the call takes."""


async def _frames_into(
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
                    raise _MalformedFrame(
                        f"an upload's chunk of {len(frame.payload)} bytes is more than an exporter takes in one "
                        f"message ({most} bytes, jumpstarter.common.wire.UPLOAD_CHUNK_MAX): send smaller chunks"
                    )
                await stream.send(frame.payload)
            elif frame.frame_type in (_GOAWAY, router_pb2.FRAME_TYPE_RST_STREAM):
                break
    except DecodeError as exc:
        raise _MalformedFrame(f"malformed StreamRequest: {exc}"[:500]) from None


async def _pump(
    stream: Any, request_iterator: AsyncIterator[bytes], context: ServicerContext, framing: Framing
) -> None:
    """Copy payloads between a gRPC Stream call and a driver's anyio stream, both ways."""

    async def inbound() -> None:
        try:
            await _frames_into(stream, request_iterator, framing)
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
    except* _MalformedFrame as group:
        malformed = group.exceptions[0]
    if malformed is not None:
        await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(malformed))
