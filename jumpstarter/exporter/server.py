"""Put a Session on a gRPC server at an address, optionally behind a passphrase."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from grpc._cython.cygrpc import ExecuteBatchError

import jumpstarter.exporter.audit as audit
from jumpstarter.common import textcalls
from jumpstarter.common.frames import add_stream_handler
from jumpstarter.common.memory import tune_allocator
from jumpstarter.common.wire import GRPC_OPTIONS, LEASE_KEY, PASSPHRASE_KEY, grpc_address
from jumpstarter.driver.base import Driver
from jumpstarter.exporter.binding import bind_failure
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.lease import Leases, guarded
from jumpstarter.exporter.limits import Limits
from jumpstarter.exporter.session import Session
from jumpstarter.v1 import jumpstarter_pb2_grpc, lease_pb2_grpc, paced_pb2_grpc
from jumpstarter.values import MAX_DEPTH

if TYPE_CHECKING:
    from jumpstarter.exporter.holders import Holders

log = logging.getLogger("jumpstarter.exporter")

# grpc sets SO_REUSEPORT by default: a second exporter on a busy port would silently share its clients.
# The server pings idle clients every 2 s so that a lease whose holder's connection was cut without a
# word (no FIN, no RST) ends within about 4 s; max_pings_without_data=0 lets those pings go on.
SERVER_OPTIONS = list(
    {
        **{k: v for k, v in GRPC_OPTIONS if k != "grpc.max_receive_message_length"},  # serving() sets its own
        "grpc.so_reuseport": 0,
        # What a client may send on a call before the exporter reads it: 1 MiB a call, fixed. gRPC's default
        # grows it with its estimate of the link (BDP probing) to some 10-20 MiB a call on a fast link, which
        # an upload nobody reads then held (16 of them took 307 MiB past --upload-memory; 66 MiB with this).
        # The cost: a call sends at most 1 MiB a round trip to the exporter (some 30 MB/s at 30 ms).
        "grpc.http2.bdp_probe": 0,
        "grpc.http2.lookahead_bytes": 1024 * 1024,
        "grpc.keepalive_time_ms": 2_000,
        "grpc.keepalive_timeout_ms": 2_000,
        # An unanswered ping closes the connection after this (gRPC's default: 60 s): a frozen holder (a
        # suspended laptop, a tunnel whose far end vanished) loses its lease as fast as a killed one.
        "grpc.http2.ping_timeout_ms": 2_000,
        "grpc.http2.max_pings_without_data": 0,
    }.items()
)


# How long a call under a kept lease waits for the lease's take, which its holder sent first: the call then runs
# anyway (it carries the lease), logged.
TAKE_ON_ITS_WAY = 5.0


class _Gate:
    """What every RPC of an exporter checks before it runs: the passphrase, if the exporter has one
    (UNAUTHENTICATED), and for a guarded RPC while the exporter is leased, that the call carries the lease
    (FAILED_PRECONDITION). The handlers are wrapped with it once, when they are added (``_Methods``): a grpc.aio
    interceptor would cost every call a round of coroutines to find its handler.

    ``hooks``: the gate of the hooks' private socket (jumpstarter.exporter.hooksocket), where a call that carries
    no lease while a hook runs is the hook's own (upstream's ``j`` sends none)."""

    def __init__(self, leases: Leases, passphrase: str | None, hooks: Holders | None = None) -> None:
        self.leases, self.hooks = leases, hooks
        self.expected = passphrase.encode() if passphrase else None

    def refusal(self, method: str, context: ServicerContext) -> tuple[grpc.StatusCode, str] | asyncio.Event | None:
        """Why the call of ``method`` may not run, or None; or an event to wait for first (see Leases.refusal)."""
        guard = guarded(method)
        if self.expected is None and not guard:
            return None
        metadata = dict(context.invocation_metadata() or ())
        if self.expected is not None:
            given = metadata.get(PASSPHRASE_KEY, "")
            if not _same_bytes(given.encode() if isinstance(given, str) else given, self.expected):
                return grpc.StatusCode.UNAUTHENTICATED, "missing or wrong passphrase"
        lease = metadata.get(LEASE_KEY, "")
        if not lease and self.hooks is not None and self.hooks.task is not None:
            return None  # the running hook's call: the board is the hook's
        why = self.leases.refusal(lease) if guard else None
        return why if why is None or isinstance(why, asyncio.Event) else (grpc.StatusCode.FAILED_PRECONDITION, why)


def _same_bytes(given: bytes, expected: bytes) -> bool:
    """Whether a passphrase is the expected one, in constant time. hmac is imported only by exporters that have a
    passphrase: with hashlib it costs every other exporter's start-up ~1.5 ms."""
    import hmac

    return hmac.compare_digest(given, expected)


class _Methods(grpc.GenericRpcHandler):
    """An exporter's RPC handlers, each gated, as one generic handler. (A grpc.aio server keeps a request pending
    for each registered method and waits on all of them for every call: the 13 methods, registered as the generated
    code registers them, cost each call some 10 us.)

    It stands in for the server in the generated ``add_*Servicer_to_server`` functions, which hand it their handlers.
    """

    def __init__(self, gate: _Gate) -> None:
        self.gate = gate
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers, as add_registered_method_handlers hands them

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self.handlers[method] = _gated(handler, method, self.gate)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.handlers.get(handler_call_details.method)


def _methods(gate: _Gate, session: Session, leases: Leases) -> _Methods:
    """The exporter's services (``session``'s and ``leases``'), each call gated by ``gate``."""
    methods = _Methods(gate)
    jumpstarter_pb2_grpc.add_ExporterServiceServicer_to_server(session, methods)
    add_stream_handler(session.Stream, methods)  # RouterService, its frames encoded by hand
    paced_pb2_grpc.add_PacedCallServiceServicer_to_server(session, methods)
    lease_pb2_grpc.add_LeaseServiceServicer_to_server(leases, methods)
    return methods


# Methods whose messages are parsed and serialized here, not by the generated code: (parse, serialize).
_CODECS = {textcalls.METHOD: (textcalls.parse_request, textcalls.serialize_response)}


def _gated(handler: grpc.RpcMethodHandler, method: str, gate: _Gate) -> grpc.RpcMethodHandler:
    """``handler``, refusing what ``gate`` refuses; and a request message that doesn't parse with INVALID_ARGUMENT
    and one log line: grpc would answer UNKNOWN naming the exception (``Unexpected <class 'DecodeError'>``) and log
    its traceback. (RouterService's frames, which it doesn't parse, are the session's to check.)

    (Parsing stays on the event loop: protobuf holds the GIL while it parses, so a worker thread would stall the
    loop all the same. The message size limit bounds it: some 50 ms for 10 MB of small values.)"""
    parse, serialize = _CODECS.get(method, (handler.request_deserializer, handler.response_serializer))
    kind = _message_name(handler.request_deserializer)
    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request: Any, context: ServicerContext) -> Any:
            await _admit(gate, method, request, context)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, _parsing(parse, kind), serialize)
    if handler.unary_stream is not None:
        streaming = handler.unary_stream

        async def stream(request: Any, context: ServicerContext) -> None:
            await _admit(gate, method, request, context)
            await _respond(streaming, request, context)

        return grpc.unary_stream_rpc_method_handler(stream, _parsing(parse, kind), serialize)
    if handler.stream_stream is not None:
        both = handler.stream_stream

        async def bidi(requests: Any, context: ServicerContext) -> None:
            await _admit(gate, method, requests, context)
            try:
                await _respond(both, requests if parse is None else _parsed(requests), context)
            except _UnparsedInStream as exc:  # aborted here, on the call's own task, whichever task read it
                await _malformed(method, exc.request, context)

        return grpc.stream_stream_rpc_method_handler(bidi, _parsing(parse, kind), serialize)
    raise TypeError(f"{method}: a client-streaming RPC, which the exporter's services have none of")


async def _admit(gate: _Gate, method: str, request: Any, context: ServicerContext) -> None:
    """Abort the call of ``method`` if ``gate`` refuses it, or if its request message didn't parse."""
    refusal = gate.refusal(method, context)
    if isinstance(refusal, asyncio.Event):  # under a kept lease's take that is on its way: run after it
        deadline = asyncio.get_running_loop().time() + TAKE_ON_ITS_WAY
        while isinstance(refusal, asyncio.Event):
            try:
                async with asyncio.timeout_at(deadline):
                    await refusal.wait()
            except TimeoutError:
                log.warning("%s ran under a kept lease's take that never came (%g s)", method, TAKE_ON_ITS_WAY)
                break
            refusal = gate.refusal(method, context)
    if isinstance(refusal, tuple):
        await context.abort(*refusal)
    if type(request) is _Unparsed:
        await _malformed(method, request, context)


async def _parsed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A stream's ``requests``, ended by _UnparsedInStream at the first that didn't parse."""
    async for request in requests:
        if type(request) is _Unparsed:
            raise _UnparsedInStream(request)
        yield request


class _UnparsedInStream(Exception):
    """A streamed request that didn't parse: raised where the service reads it, to end its call."""

    def __init__(self, request: _Unparsed) -> None:
        super().__init__(request.reason)
        self.request = request


async def _respond(behavior: Callable[..., Any], request: Any, context: ServicerContext) -> None:
    """Run a response-streaming ``behavior``: one that writes its responses (grpc's reader/writer API), or an async
    generator of them, written here as grpc would write them."""
    if inspect.iscoroutinefunction(behavior):
        await behavior(request, context)
        return
    async with aclosing(behavior(request, context)) as responses:
        async for response in responses:
            try:
                await context.write(response)
            except ExecuteBatchError:
                # The client went away as this was sent, before gRPC noticed it had: the call is over. Ended as
                # cancelled, which it is, rather than as grpc's "ExecuteBatchError raised in core" ERROR and
                # traceback in the exporter's log (a soak's killed clients made two in five minutes).
                raise asyncio.CancelledError from None


class _Unparsed:
    """A request message that didn't parse, and why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _message_name(parse: Callable[[bytes], Any] | None) -> str:
    """The name of the message a generated ``parse`` (``DriverCallRequest.FromString``) reads."""
    return getattr(parse, "__qualname__", "request").rsplit(".", 1)[0]


def _parsing(parse: Callable[[bytes], Any] | None, kind: str) -> Callable[[bytes], Any] | None:
    """``parse``, returning an _Unparsed for a ``kind`` of request that doesn't parse (the handler refuses it)."""
    if parse is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # a DecodeError, or protobuf's own message when values nest too deep
            nest = f" (values nest at most {MAX_DEPTH} levels)" if "Depth" in str(exc) else ""
            return _Unparsed(f"malformed {kind}: {exc}{nest}"[:500])

    return deserialize


async def _malformed(method: str, request: _Unparsed, context: ServicerContext) -> NoReturn:
    log.info("refused %s: %s", method, request.reason)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)


@asynccontextmanager
async def serving(
    root: Driver,
    address: str,
    *,
    passphrase: str | None = None,
    labels: dict[str, str] | None = None,
    tls: tuple[bytes, bytes] | None = None,
    session: Session | None = None,
    limits: Limits | None = None,
    holders: Holders | None = None,
) -> AsyncIterator[str]:
    """Serve ``root`` at ``address`` until the block ends; yields the address clients use.

    A TCP address with port 0 gets a free port, reported in the yielded address. ``tls`` is the
    server's certificate chain and private key (PEM) to serve TLS with; None serves plain gRPC.
    ``limits``: what clients may make the exporter hold (default: ``Limits.from_env()``). ``holders``: the
    config's hooks, run as the board changes holder (killed, with their children, when the block ends).
    Leaving the block stops the server; closing the drivers is the caller's job.
    """
    limits = limits or (session.limits if session is not None else Limits.from_env())
    session = session or Session(root, labels, limits=limits)
    leases = Leases(stragglers=session.stragglers, holders=holders)
    session.holders = holders
    tune_allocator()  # large values: see jumpstarter.common.memory
    options = [*SERVER_OPTIONS, ("grpc.max_receive_message_length", limits.max_message)]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((_methods(_Gate(leases, passphrase), session, leases),))
    target = grpc_address(address)
    try:
        if tls is None:
            port = server.add_insecure_port(target)
        else:
            port = server.add_secure_port(target, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    except RuntimeError as exc:
        raise OSError(f"can't listen on {address}: {bind_failure(address, target) or exc}") from None
    if not target.startswith("unix:") and target.rsplit(":", 1)[-1] == "0":
        target = f"{target.rsplit(':', 1)[0]}:{port}"
    await server.start()
    hook_server = None
    try:
        if holders is not None:  # its hooks reach it on a private socket, without TLS or a lease of their own
            from jumpstarter.exporter.hooks import Where
            from jumpstarter.exporter.hooksocket import HookSocket

            hook_server = HookSocket(_methods(_Gate(leases, None, hooks=holders), session, leases), options)
            holders.where = Where(await hook_server.start(), passphrase)
        session.start_logging()
    except BaseException:
        await server.stop(grace=None)
        raise
    try:
        with audit.holders(lambda: leases.current.holder if leases.current is not None else ""):
            yield target
    finally:
        try:
            await leases.close()  # a hook that tidies the board (afterLease) runs to its end first
            session.stop_logging()
            await server.stop(grace=1)
        finally:
            if hook_server is not None:
                await hook_server.stop()
