"""Put a Session on a gRPC server at an address, optionally behind a passphrase."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, NoReturn

import grpc

from jumpstarter.common.frames import add_stream_handler
from jumpstarter.common.memory import tune_allocator
from jumpstarter.common.wire import GRPC_OPTIONS, LEASE_KEY, PASSPHRASE_KEY, grpc_address
from jumpstarter.driver.base import Driver
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.lease import Leases, guarded
from jumpstarter.exporter.limits import Limits
from jumpstarter.exporter.session import Session
from jumpstarter.v1 import jumpstarter_pb2_grpc, lease_pb2_grpc, paced_pb2_grpc
from jumpstarter.values import MAX_DEPTH

log = logging.getLogger("jumpstarter.exporter")

# grpc sets SO_REUSEPORT by default: a second exporter on a busy port would silently share its clients.
# The server pings idle clients every 2 s so that a lease whose holder's connection was cut without a
# word (no FIN, no RST) ends within about 4 s; max_pings_without_data=0 lets those pings go on.
SERVER_OPTIONS = list(
    {
        **{k: v for k, v in GRPC_OPTIONS if k != "grpc.max_receive_message_length"},  # serving() sets its own
        "grpc.so_reuseport": 0,
        "grpc.keepalive_time_ms": 2_000,
        "grpc.keepalive_timeout_ms": 2_000,
        # An unanswered ping closes the connection after this (gRPC's default: 60 s): a frozen holder (a
        # suspended laptop, a tunnel whose far end vanished) loses its lease as fast as a killed one.
        "grpc.http2.ping_timeout_ms": 2_000,
        "grpc.http2.max_pings_without_data": 0,
    }.items()
)


class _Passphrase(grpc.aio.ServerInterceptor):
    """Refuse every RPC whose metadata lacks the passphrase (UNAUTHENTICATED)."""

    def __init__(self, passphrase: str) -> None:
        self.expected = passphrase.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        given = dict(details.invocation_metadata or ()).get(PASSPHRASE_KEY, "")
        handler = await continuation(details)
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self.expected):
            return handler
        return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, "missing or wrong passphrase")


class _LeaseGuard(grpc.aio.ServerInterceptor):
    """While the exporter is leased, refuse hardware RPCs that don't carry the lease (FAILED_PRECONDITION).

    It also refuses a request message that doesn't parse, with INVALID_ARGUMENT (see ``_parsing``): here, the
    one interceptor every exporter has, so that a call pays for no other.
    """

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self._parsing: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}  # by RPC (served ones)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is not None and not handler.request_streaming:
            cached = self._parsing.get(details.method)
            if cached is None or cached[0] is not handler:
                cached = self._parsing[details.method] = (handler, _parsing(handler, details.method))
            handler = cached[1]
        if not guarded(details.method):
            return handler
        refusal = self.leases.refusal(dict(details.invocation_metadata or ()).get(LEASE_KEY, ""))
        return handler if refusal is None else _refusing(handler, grpc.StatusCode.FAILED_PRECONDITION, refusal)


def _refusing(
    handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler | None:
    """A handler of the same kind as ``handler`` that aborts with ``code`` and ``message``."""
    if handler is None:
        return None

    async def deny(request: Any, context: ServicerContext) -> NoReturn:
        await context.abort(code, message)

    async def deny_stream(request: Any, context: ServicerContext) -> AsyncIterator[None]:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    kinds = {
        "unary_unary": grpc.unary_unary_rpc_method_handler(deny, handler.request_deserializer),
        "unary_stream": grpc.unary_stream_rpc_method_handler(deny_stream, handler.request_deserializer),
        "stream_unary": grpc.stream_unary_rpc_method_handler(deny, handler.request_deserializer),
        "stream_stream": grpc.stream_stream_rpc_method_handler(deny_stream, handler.request_deserializer),
    }
    for kind, replacement in kinds.items():
        if getattr(handler, kind) is not None:
            return replacement
    return handler


class _Unparsed:
    """A request message that didn't parse, and why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parsing(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` (of a single request message) answering a request that doesn't parse with INVALID_ARGUMENT and
    one log line: grpc would answer UNKNOWN naming the exception (``Unexpected <class 'DecodeError'>``) and log its
    traceback. Streamed requests are the services' to check (session.py).

    (Parsing stays on the event loop: protobuf holds the GIL while it parses, so a worker thread would stall the
    loop all the same. The message size limit bounds it: some 50 ms for 10 MB of small values.)"""
    parse = handler.request_deserializer
    if parse is None:
        return handler
    kind = getattr(parse, "__qualname__", "request").rsplit(".", 1)[0]

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # a DecodeError, or protobuf's own message when values nest too deep
            nest = f" (values nest at most {MAX_DEPTH} levels)" if "Depth" in str(exc) else ""
            return _Unparsed(f"malformed {kind}: {exc}{nest}"[:500])

    async def refuse(request: _Unparsed, context: ServicerContext) -> NoReturn:
        log.info("refused %s: %s", method, request.reason)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)

    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request: Any, context: ServicerContext) -> Any:
            if type(request) is _Unparsed:
                await refuse(request, context)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, deserialize, handler.response_serializer)
    if handler.unary_stream is not None:
        streaming = handler.unary_stream

        async def stream(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            if type(request) is _Unparsed:
                await refuse(request, context)
            async with aclosing(streaming(request, context)) as responses:
                async for response in responses:
                    yield response

        return grpc.unary_stream_rpc_method_handler(stream, deserialize, handler.response_serializer)
    return handler


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
) -> AsyncIterator[str]:
    """Serve ``root`` at ``address`` until the block ends; yields the address clients use.

    A TCP address with port 0 gets a free port, reported in the yielded address. ``tls`` is the
    server's certificate chain and private key (PEM) to serve TLS with; None serves plain gRPC.
    ``limits``: what clients may make the exporter hold (default: ``Limits.from_env()``).
    Leaving the block stops the server; closing the drivers is the caller's job.
    """
    limits = limits or (session.limits if session is not None else Limits.from_env())
    session = session or Session(root, labels, limits=limits)
    leases = Leases()
    tune_allocator()  # large values: see jumpstarter.common.memory
    interceptors = [*([_Passphrase(passphrase)] if passphrase else []), _LeaseGuard(leases)]
    options = [*SERVER_OPTIONS, ("grpc.max_receive_message_length", limits.max_message)]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    jumpstarter_pb2_grpc.add_ExporterServiceServicer_to_server(session, server)
    add_stream_handler(session.Stream, server)  # RouterService, its frames encoded by hand
    paced_pb2_grpc.add_PacedCallServiceServicer_to_server(session, server)
    lease_pb2_grpc.add_LeaseServiceServicer_to_server(leases, server)
    target = grpc_address(address)
    try:
        if tls is None:
            port = server.add_insecure_port(target)
        else:
            port = server.add_secure_port(target, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    except RuntimeError as exc:
        raise OSError(f"can't listen on {address}: {exc}") from None
    if not target.startswith("unix:") and target.rsplit(":", 1)[-1] == "0":
        target = f"{target.rsplit(':', 1)[0]}:{port}"
    await server.start()
    session.start_logging()
    try:
        yield target
    finally:
        session.stop_logging()
        await server.stop(grace=1)
