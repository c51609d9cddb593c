"""One client connection to an exporter: the RPCs, blocking and async.

The blocking path calls grpc's synchronous stubs in the caller's thread: no
event loop and no thread hop per call. Async twins use a grpc.aio channel made
lazily for the running event loop.
"""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from contextlib import AbstractAsyncContextManager, suppress
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import grpc
from anyio.from_thread import BlockingPortal, start_blocking_portal
from google.protobuf.empty_pb2 import Empty

from jumpstarter.client.streams import AsyncStream, BlockingStream
from jumpstarter.client.uploads import upload
from jumpstarter.common.frames import raw_stream_method, stream_method
from jumpstarter.common.memory import tune_allocator
from jumpstarter.common.textcalls import TextResult, driver_call, encode_request
from jumpstarter.common.wire import (
    BATCH_KEY,
    GRPC_OPTIONS,
    LEASE_KEY,
    PASSPHRASE_KEY,
    RAW_KEY,
    grpc_address,
)
from jumpstarter.errors import AuthenticationError, ConnectError, DriverTimeout, JumpstarterError, error_from_rpc
from jumpstarter.v1 import jumpstarter_pb2, jumpstarter_pb2_grpc, lease_pb2_grpc, paced_pb2, paced_pb2_grpc
from jumpstarter.values import decode, decode_result, encode_args, restore_ints

CONNECT_TIMEOUT = 2.0

# (target, method, args, outcome, seconds) after every call; outcome is the result or the exception.
CallObserver = Callable[[str, str, tuple, Any, float], None]

# How a client reaches an exporter: False for plain gRPC, True for TLS trusting grpc's default roots
# (the system's, or the file in GRPC_DEFAULT_SSL_ROOTS_FILE_PATH), or the path of a CA certificate (PEM).
TLS = bool | str | Path


def channel_credentials(tls: TLS) -> grpc.ChannelCredentials | None:
    """The credentials for ``tls``; None for plain gRPC."""
    if tls is False or tls == "":
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    try:
        return grpc.ssl_channel_credentials(root_certificates=Path(tls).read_bytes())
    except OSError as exc:
        raise ConnectError(f"can't read the TLS CA certificate {tls}: {exc.strerror}") from None


class _AioStubs(NamedTuple):
    """A grpc.aio channel of one event loop and the stubs on it."""

    channel: Any  # grpc.aio.Channel: kept with its stubs, and ended with its event loop
    exporter: jumpstarter_pb2_grpc.ExporterServiceStub
    stream: Any  # RouterService.Stream for uploads, its frames encoded by hand (jumpstarter.common.frames)
    byte_stream: Any  # RouterService.Stream for a driver's byte stream, its messages bytes (framed by AsyncStream)
    call: Any  # ExporterService.DriverCall, big text encoded by hand (jumpstarter.common.textcalls)
    paced: paced_pb2_grpc.PacedCallServiceStub
    lease: lease_pb2_grpc.LeaseServiceStub


_Request = TypeVar("_Request", jumpstarter_pb2.DriverCallRequest, jumpstarter_pb2.StreamingDriverCallRequest)
_BATCHES = ((BATCH_KEY, "1"),)  # a StreamingDriverCall's metadata: we take several items a message


class _Pending:
    """One driver call under way, blocking or async: its replies decoded, its RPC error made the caller's
    exception, and the observers told how it ended (the pytest plugin's call log). Observers are looked for
    only at the end, and only timed when there are some: the blocking path is measured against bare gRPC."""

    __slots__ = ("_connection", "_target", "_method", "_args", "_started", "_count")

    def __init__(self, connection: Connection, target: str, method: str, args: tuple) -> None:
        self._connection = connection
        self._target = target
        self._method = method
        self._args = args
        self._count = 0
        self._started = time.perf_counter()

    def returned(self, reply: jumpstarter_pb2.DriverCallResponse | TextResult) -> Any:
        """A unary call's result."""
        result = reply.value if type(reply) is TextResult else decode_result(reply)
        self._ended(result)
        return result

    def items(self, reply: jumpstarter_pb2.StreamingDriverCallResponse) -> list[Any]:
        """The items of one message of a streaming call: a batch, or one item (as upstream's exporter sends)."""
        values = reply.items
        if not values:
            self._count += 1
            return [decode_result(reply)]
        self._count += len(values)
        items = [decode(value) for value in values]
        if reply.HasField("int_paths"):  # paths start with the item's index
            restore_ints(items, reply.int_paths.paths)
        return items

    def streamed(self) -> None:
        """A streaming call's end: its observers see how many items it yielded."""
        self._ended(f"<{self._count} items>")

    def failed(self, err: grpc.RpcError) -> Exception:
        """The exception to raise for ``err`` (a driver's own error by its kind, or the connection's)."""
        limit = self._connection.call_timeout
        if (
            limit is not None
            and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            and err.details() == "Deadline Exceeded"
        ):
            exc: Exception = DriverTimeout(
                f"no answer within the call timeout of {limit:g} s: the driver may be stuck (the pytest plugin's "
                "--call-timeout, or the marker's call_timeout, sets it)",
                target=self._target,
                method=self._method,
            )
            self._connection.broken += 1  # the exporter may still be busy with it: a kept lease is asked again
            self._ended(exc)
            return exc
        exc = error_from_rpc(err, address=self._connection.address, target=self._target, method=self._method)
        if isinstance(exc, ConnectError):
            self._connection.broken += 1
        self._ended(exc)
        return exc

    def _ended(self, outcome: Any) -> None:
        observers = self._connection.observers
        if observers:
            elapsed = time.perf_counter() - self._started
            for observer in observers:
                observer(self._target, self._method, self._args, outcome, elapsed)


class OwnPortal:
    """An event loop in a thread of its own, started on first use and stopped by ``close()``: a connection's,
    for clients that run their async API from blocking code."""

    def __init__(self) -> None:
        self._started: tuple[Any, BlockingPortal] | None = None
        self._lock = threading.Lock()

    def get(self) -> BlockingPortal:
        with self._lock:
            if self._started is None:
                starter = start_blocking_portal()
                self._started = (starter, starter.__enter__())
            return self._started[1]

    def close(self) -> None:
        with self._lock:
            started, self._started = self._started, None
        if started is not None:
            started[0].__exit__(None, None, None)


class Connection:
    """RPCs to one exporter. ``target`` strings name a driver for messages ("custom.power")."""

    def __init__(self, address: str, passphrase: str | None = None, tls: TLS = False) -> None:
        self.address = address
        self.target = grpc_address(address)
        self.passphrase = passphrase
        self.tls = tls
        self.metadata: tuple[tuple[str, str], ...] = ((PASSPHRASE_KEY, passphrase),) if passphrase else ()
        self.observers: list[CallObserver] = []
        self._credentials = channel_credentials(tls)
        tune_allocator()  # large values: see jumpstarter.common.memory
        if self._credentials is None:
            self._channel = grpc.insecure_channel(self.target, options=GRPC_OPTIONS)
        else:
            self._channel = grpc.secure_channel(self.target, self._credentials, options=GRPC_OPTIONS)
        self._exporter = jumpstarter_pb2_grpc.ExporterServiceStub(self._channel)
        self._stream = raw_stream_method(self._channel)  # RouterService.Stream for byte streams, as in _AioStubs
        self._call = driver_call(self._channel)  # ExporterService.DriverCall, as in _AioStubs
        self._paced = paced_pb2_grpc.PacedCallServiceStub(self._channel)
        # uuid -> {method: lookahead} of the generators that declared one, from the report (None: not read yet)
        self._lookaheads: dict[str, dict[str, int]] | None = None
        self._exported: dict[str, list[str]] = {}  # by uuid: what an exporter of ours says each driver exports
        self._aio: dict[asyncio.AbstractEventLoop, _AioStubs] = {}
        self._portal = OwnPortal()
        self.closed = False
        # Seconds a (unary) driver call may take before it fails as a DriverTimeout naming it; None: no limit.
        # The pytest plugin sets it per test (--call-timeout). Generators and byte streams have none: a console
        # may rightly be read for an hour.
        self.call_timeout: float | None = None
        self.on_close: list[Callable[[], None]] = []  # what ends with the connection (a lease session)
        # Calls that failed for the connection (a ConnectError: the exporter may be gone), timed out or were left
        # before their end (it may still run them): a kept lease is asked for again (jumpstarter.client.lease).
        self.broken = 0
        self._handed: set[str] = set()  # uuids of upload handles given to a call (see resource_async)

    def _note_handles(self, args: tuple) -> None:
        """Remember the upload handles among a call's arguments (or one level inside them): the exporter ends
        those uploads when the call ends; one given to no call is not waited for."""
        for arg in args:
            inside = arg.values() if isinstance(arg, dict) else arg if isinstance(arg, (list, tuple)) else ()
            for value in (arg, *inside):
                if isinstance(value, dict) and value.get("kind") == "client_stream" and "uuid" in value:
                    self._handed.add(value["uuid"])

    def _closed_error(self, target: str, method: str) -> ConnectError:
        return ConnectError(f"{_where(target, method)}: the connection to the exporter at {self.address} is closed")

    # Lifecycle -----------------------------------------------------------------

    def wait_ready(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Wait until the exporter answers (whatever it answers: report() and the calls say what is wrong)."""
        try:
            self.report(timeout, wait=True)
        except JumpstarterError:
            if self.closed:  # nothing answered in time
                raise
            # something answered: report() and the calls say what is wrong

    def report(self, timeout: float = 10.0, *, wait: bool = False) -> jumpstarter_pb2.GetReportResponse:
        """The exporter's report. ``wait``: the exporter may not be up yet (a new connection); wait for it up to
        ``timeout``. Asked with a call that waits for the channel, not with grpc.channel_ready_future, whose
        watcher thread holds the channel's close() up to 0.2 s."""
        try:
            return self._read(
                self._exporter.GetReport(Empty(), metadata=self.metadata, timeout=timeout, wait_for_ready=wait)
            )
        except grpc.RpcError as err:
            if wait and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                self.close()
                raise self._no_answer(timeout) from None
            exc = error_from_rpc(err, address=self.address)
            if isinstance(exc, AuthenticationError) and not self.passphrase:
                exc = AuthenticationError(f"exporter at {self.address} requires a passphrase")
            raise exc from None

    def _read(self, report: jumpstarter_pb2.GetReportResponse) -> jumpstarter_pb2.GetReportResponse:
        """Note which generators pace themselves (@export(lookahead=N)): their calls go by PacedCallService."""
        self._lookaheads = {r.uuid: dict(r.methods_lookahead) for r in report.reports if r.methods_lookahead}
        self._exported = {r.uuid: list(r.exported_methods) for r in report.reports if r.exported_methods}
        return report

    def exported_methods(self, uuid: str) -> list[str] | None:
        """The names of every method the driver ``uuid`` exports, from the report this connection read; None
        when the exporter doesn't say (upstream's names only the methods that have help)."""
        return self._exported.get(uuid)

    def _lookahead(self, uuid: str, method: str) -> int | None:
        """The declared lookahead of a generator method; None for the default. A connection that has read no
        report yet (one made by hand) reads it now, once."""
        if self._lookaheads is None:
            try:
                self.report()
            except JumpstarterError:
                self._lookaheads = {}  # the call itself says what is wrong
        return (self._lookaheads or {}).get(uuid, {}).get(method)

    def _no_answer(self, timeout: float) -> ConnectError:
        how = " over TLS (does it serve TLS, with a certificate this client trusts?)" if self.tls else ""
        if not self.tls and _listening(self.target):
            how = (
                " in plain gRPC, though something listens there: if it serves TLS, reach it over TLS (a CA file: "
                "connect(..., tls=...), pytest --exporter-tls, jumpstarter shell --tls-ca)"
            )
        return ConnectError(f"no exporter answers at {self.address}{how} (waited {timeout:g} s)")

    def hold(self, lease_id: str | None) -> None:
        """Send ``lease_id`` with every call from now on (None: send none); see jumpstarter.client.lease."""
        base = ((PASSPHRASE_KEY, self.passphrase),) if self.passphrase else ()
        self.metadata = (*base, (LEASE_KEY, lease_id)) if lease_id else base

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def portal(self) -> BlockingPortal:
        """An event loop in a thread of its own, started on first use, for the async API from blocking
        code: ``client.portal.call(...)``, ``client.portal.wrap_async_context_manager(...)`` (as upstream)."""
        return self._portal.get()

    def close(self) -> None:
        self.closed = True
        for hook in self.on_close:
            hook()
        self._channel.close()
        self._aio.clear()  # aio channels belong to their event loops and end with them
        self._portal.close()

    def _error(self, target: str, method: str) -> Callable[[grpc.RpcError], Exception]:
        return lambda err: error_from_rpc(err, address=self.address, target=target, method=method)

    def _stream_metadata(self, **request: str | None) -> tuple[tuple[str, str], ...]:
        """A RouterService.Stream's metadata: what the stream is for (a driver's byte stream, an upload) goes
        as JSON beside the passphrase and lease, as upstream's exporter expects it."""
        return (*self.metadata, ("request", json.dumps(request)))

    def _byte_stream_metadata(self, uuid: str, method: str) -> tuple[tuple[str, str], ...]:
        """A driver byte stream's metadata: asking for no frames, which our exporter grants (common.frames)."""
        return (*self._stream_metadata(kind="driver", uuid=uuid, method=method), (RAW_KEY, "1"))

    def _begin(
        self, kind: type[_Request], uuid: str, target: str, method: str, args: tuple
    ) -> tuple[_Request, _Pending]:
        """A driver call's request and its record: the one place both paths encode arguments (a value the wire
        can't carry fails here, naming the call), note upload handles and start the clock."""
        request = kind(uuid=uuid, method=method)
        try:
            encode_args(args, request)
        except TypeError as exc:
            raise TypeError(f"{_where(target, method)}: {exc}") from None
        self._note_handles(args)
        return request, _Pending(self, target, method, args)

    def _begin_call(
        self, uuid: str, target: str, method: str, args: tuple
    ) -> tuple[jumpstarter_pb2.DriverCallRequest | bytes, _Pending]:
        """_begin() for a unary call, whose request is encoded by hand when it carries big text (see
        jumpstarter.common.textcalls)."""
        encoded = encode_request(uuid, method, args)
        if encoded is None:
            return self._begin(jumpstarter_pb2.DriverCallRequest, uuid, target, method, args)
        return encoded, _Pending(self, target, method, args)  # str arguments: no upload handles among them

    # Blocking ------------------------------------------------------------------
    # The blocking and async calls differ only in how they reach the stub; what a call sends, decodes, raises
    # and tells the observers is _begin()'s and _Pending's.

    def call(self, uuid: str, target: str, method: str, args: tuple) -> Any:
        __tracebackhide__ = True  # a failing call's traceback shows the test's line and the driver's message
        if self.closed:  # e.g. a client's __del__ calling its driver after the test ended
            raise self._closed_error(target, method)
        request, pending = self._begin_call(uuid, target, method, args)
        try:
            reply = self._call(request, metadata=self.metadata, timeout=self.call_timeout)
        except grpc.RpcError as err:
            raise pending.failed(err) from None
        return pending.returned(reply)

    def streamingcall(self, uuid: str, target: str, method: str, args: tuple) -> Generator[Any, None, None]:
        __tracebackhide__ = True  # a failing call's traceback shows the test's line and the driver's message
        if self.closed:
            raise self._closed_error(target, method)
        lookahead = self._lookahead(uuid, method)
        request, pending = self._begin(jumpstarter_pb2.StreamingDriverCallRequest, uuid, target, method, args)
        if lookahead is not None:
            yield from self._paced_call(request, pending, lookahead)
            return
        call = self._exporter.StreamingDriverCall(request, metadata=self.metadata + _BATCHES)
        ended = False
        try:
            for response in call:
                yield from pending.items(response)
            ended = True
        except grpc.RpcError as err:
            ended = True
            raise pending.failed(err) from None
        finally:
            call.cancel()
            self._left(ended)
        pending.streamed()

    def _paced_call(
        self, request: jumpstarter_pb2.StreamingDriverCallRequest, pending: _Pending, lookahead: int
    ) -> Generator[Any, None, None]:
        """A generator that declared its lookahead, by PacedCallService: the exporter is told how many items our
        caller has asked for (every next(), for lookahead 0; every lookahead/2 + 1 items otherwise), and produces
        at most ``lookahead`` more."""
        __tracebackhide__ = True
        outbox: queue.SimpleQueue[paced_pb2.PacedRequest | None] = queue.SimpleQueue()
        outbox.put(paced_pb2.PacedRequest(call=request, wanted=1))
        call = self._paced.PacedStreamingDriverCall(iter(outbox.get, None), metadata=self.metadata)
        asked = taken = 1
        ended = False
        try:
            for response in call:
                for item in pending.items(response):
                    yield item
                    taken += 1  # the caller's next() asks for one more
                    if taken - asked > lookahead // 2:
                        asked = taken
                        outbox.put(paced_pb2.PacedRequest(wanted=asked))
            ended = True
        except grpc.RpcError as err:
            ended = True
            raise pending.failed(err) from None
        finally:
            outbox.put(None)
            call.cancel()
            self._left(ended)
        pending.streamed()

    def _left(self, ended: bool) -> None:
        """A generator's call is over; if its caller left before its end, the exporter may still be inside the
        driver's step (a sync generator's thread can't be stopped): a kept lease is asked for again."""
        if not ended:
            self.broken += 1

    def stream(self, uuid: str, target: str, method: str) -> BlockingStream:
        return BlockingStream(self._stream, self._byte_stream_metadata(uuid, method), self._error(target, method))

    def reset(self) -> None:
        try:
            self._exporter.Reset(jumpstarter_pb2.ResetRequest(), metadata=self.metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err, address=self.address, method="reset") from None

    def follow_logs(self, on_record: Callable[[jumpstarter_pb2.LogStreamResponse], None]) -> Callable[[], None]:
        """Hand each of the exporter's log records to ``on_record``, from a thread, until the returned stop()."""
        call = self._exporter.LogStream(Empty(), metadata=self.metadata)

        def follow() -> None:
            try:
                for record in call:
                    on_record(record)
            except grpc.RpcError:
                pass  # stopped, or the exporter went away: the calls themselves report that

        thread = threading.Thread(target=follow, name=f"jumpstarter logs {self.address}", daemon=True)
        thread.start()

        def stop() -> None:
            call.cancel()
            thread.join(5)

        return stop

    # Async ---------------------------------------------------------------------

    def _aio_stubs(self) -> _AioStubs:
        loop = asyncio.get_running_loop()
        stubs = self._aio.get(loop)
        if stubs is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(self.target, options=GRPC_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(self.target, self._credentials, options=GRPC_OPTIONS)
            stubs = _AioStubs(
                channel,
                jumpstarter_pb2_grpc.ExporterServiceStub(channel),
                stream_method(channel),
                raw_stream_method(channel),
                driver_call(channel),
                paced_pb2_grpc.PacedCallServiceStub(channel),
                lease_pb2_grpc.LeaseServiceStub(channel),
            )
            self._aio = {lp: s for lp, s in self._aio.items() if not lp.is_closed()}
            self._aio[loop] = stubs
        return stubs

    async def call_async(self, uuid: str, target: str, method: str, args: tuple) -> Any:
        __tracebackhide__ = True  # a failing call's traceback shows the test's line and the driver's message
        request, pending = self._begin_call(uuid, target, method, args)
        try:
            reply = await self._aio_stubs().call(request, metadata=self.metadata, timeout=self.call_timeout)
        except grpc.RpcError as err:
            raise pending.failed(err) from None
        return pending.returned(reply)

    async def streamingcall_async(self, uuid: str, target: str, method: str, args: tuple) -> AsyncGenerator[Any, None]:
        __tracebackhide__ = True  # a failing call's traceback shows the test's line and the driver's message
        if self._lookaheads is None:  # a connection made by hand: read the report once (see _lookahead)
            with suppress(grpc.RpcError):
                self._read(await self._aio_stubs().exporter.GetReport(Empty(), metadata=self.metadata))
        lookahead = self._lookahead(uuid, method)
        request, pending = self._begin(jumpstarter_pb2.StreamingDriverCallRequest, uuid, target, method, args)
        if lookahead is not None:
            async for item in self._paced_call_async(request, pending, lookahead):
                yield item
            return
        call = self._aio_stubs().exporter.StreamingDriverCall(request, metadata=self.metadata + _BATCHES)
        ended = False
        try:
            async for response in call:
                for item in pending.items(response):
                    yield item
            ended = True
        except grpc.RpcError as err:
            ended = True
            raise pending.failed(err) from None
        finally:
            call.cancel()
            self._left(ended)
        pending.streamed()

    async def _paced_call_async(
        self, request: jumpstarter_pb2.StreamingDriverCallRequest, pending: _Pending, lookahead: int
    ) -> AsyncGenerator[Any, None]:
        """The async twin of _paced_call()."""
        __tracebackhide__ = True
        call = self._aio_stubs().paced.PacedStreamingDriverCall(metadata=self.metadata)
        asked = taken = 1
        ended = False
        try:
            await call.write(paced_pb2.PacedRequest(call=request, wanted=1))
            while (response := await call.read()) is not grpc.aio.EOF:
                for item in pending.items(response):
                    yield item
                    taken += 1  # the caller asks for one more
                    if taken - asked > lookahead // 2:
                        asked = taken
                        with suppress(asyncio.InvalidStateError, grpc.RpcError):  # ended: read() says how
                            await call.write(paced_pb2.PacedRequest(wanted=asked))
            ended = True
        except grpc.RpcError as err:
            ended = True
            raise pending.failed(err) from None
        finally:
            call.cancel()
            self._left(ended)
        pending.streamed()

    def stream_async(self, uuid: str, target: str, method: str) -> AsyncStream:
        call = self._aio_stubs().byte_stream(metadata=self._byte_stream_metadata(uuid, method))
        return AsyncStream(call, self._error(target, method))

    def resource_async(
        self, uuid: str, target: str, source: Any, content_encoding: str | None = None
    ) -> AbstractAsyncContextManager[dict]:
        """Upload ``source`` (an anyio byte stream, or an async iterable of bytes) for a driver call of
        ``uuid``; yields the handle to pass to that call, which reads the bytes with ``Driver.resource()``.
        What the driver sends back on it (a dump) goes to ``source.send()``, all of it by the block's end,
        where ``source`` is closed (``aclose()``), as upstream's client closes it.

        A ``content_encoding`` (gzip, xz, bz2, zstd) says ``source`` is compressed: it is decompressed here, and
        the driver reads plain bytes, as upstream's client does for an exporter that takes no encoding.
        """
        return upload(self, uuid, target, source, content_encoding)


def _listening(target: str) -> bool:
    """Whether a TCP ``HOST:PORT`` target accepts connections (for a hint: what answers there isn't plain gRPC)."""
    return not target.startswith("unix:") and accepts_connections(target) is True


def accepts_connections(target: str, timeout: float = 0.5) -> bool | None:
    """Whether something accepts connections at a gRPC target, a unix socket or ``HOST:PORT``: False when the
    connection is refused (nothing listens: the exporter's process is gone), None when that can't be told (no
    answer within ``timeout``, a name grpc resolves itself). A frozen or busy exporter's socket still accepts
    connections: its kernel does that."""
    try:
        if target.startswith("unix:"):
            path = target.removeprefix("unix:")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                probe.connect("/" + path.lstrip("/") if path.startswith("//") else path)
        else:
            host, _, port = target.rpartition(":")
            if not port.isdigit():
                return None
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return None
    return True


def _where(target: str, method: str) -> str:
    """A call's name in messages: "custom.power.on", or the bare method for the root driver."""
    return f"{target}.{method}" if target else method
