"""Put a Session on a gRPC server at an address, optionally behind a passphrase."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import grpc

from jumpstarter.common.wire import GRPC_OPTIONS, LEASE_KEY, PASSPHRASE_KEY, grpc_address
from jumpstarter.driver.base import Driver
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.lease import Leases, guarded
from jumpstarter.exporter.session import Session
from jumpstarter.v1 import jumpstarter_pb2_grpc, lease_pb2_grpc, router_pb2_grpc

# grpc sets SO_REUSEPORT by default: a second exporter on a busy port would silently share its clients.
# The server pings idle clients every 2 s so that a lease whose holder's connection was cut without a
# word (no FIN, no RST) ends within about 4 s; max_pings_without_data=0 lets those pings go on.
SERVER_OPTIONS = list(
    {
        **dict(GRPC_OPTIONS),
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
    """While the exporter is leased, refuse hardware RPCs that don't carry the lease (FAILED_PRECONDITION)."""

    def __init__(self, leases: Leases) -> None:
        self.leases = leases

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
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


@asynccontextmanager
async def serving(
    root: Driver,
    address: str,
    *,
    passphrase: str | None = None,
    labels: dict[str, str] | None = None,
    tls: tuple[bytes, bytes] | None = None,
    session: Session | None = None,
) -> AsyncIterator[str]:
    """Serve ``root`` at ``address`` until the block ends; yields the address clients use.

    A TCP address with port 0 gets a free port, reported in the yielded address. ``tls`` is the
    server's certificate chain and private key (PEM) to serve TLS with; None serves plain gRPC.
    Leaving the block stops the server; closing the drivers is the caller's job.
    """
    session = session or Session(root, labels)
    leases = Leases()
    interceptors = [*([_Passphrase(passphrase)] if passphrase else []), _LeaseGuard(leases)]
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    jumpstarter_pb2_grpc.add_ExporterServiceServicer_to_server(session, server)
    router_pb2_grpc.add_RouterServiceServicer_to_server(session, server)
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
