"""Errors that cross the wire, and the gRPC status codes that carry them.

The exporter aborts a failed call with a code chosen by the exception (as
upstream Jumpstarter does); the client turns the code back into an exception
that is both a ``DriverError`` and the matching builtin, so ``except
TimeoutError`` works on a remote timeout.
"""

from __future__ import annotations

import re

import grpc


class JumpstarterError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(JumpstarterError, ValueError):
    """An ExporterConfig that can't be used; the message names file, line and export."""


class ConnectError(JumpstarterError, ConnectionError):
    """Nothing usable answers at an exporter's address."""


class AuthenticationError(JumpstarterError, PermissionError):
    """The exporter refused the passphrase."""


class ClientClassError(JumpstarterError, ImportError):
    """The exporter names a client class this side won't or can't load."""


class EnvironmentVariableNotSetError(JumpstarterError, RuntimeError):
    """A shell-provided variable (``JUMPSTARTER_HOST``) is missing; upstream's name for it."""


class LeaseError(JumpstarterError):
    """The exporter is leased by someone else, or the lease this client held has ended."""


class DriverError(JumpstarterError):
    """A driver call failed on the exporter. ``kind`` says how; the message is the driver's."""

    kind = "other"

    def __init__(self, message: str, *, target: str = "", method: str = "") -> None:
        self.message, self.target, self.method = message, target, method
        where = f"{target}.{method}" if target else method
        super().__init__(f"{where}: {message}" if where else message)


class DriverInvalidArgument(DriverError, ValueError):
    kind = "invalid argument"


class DriverNotImplemented(DriverError, NotImplementedError):
    kind = "not implemented"


class DriverTimeout(DriverError, TimeoutError):
    kind = "timeout"


class DriverConnectionError(DriverError, ConnectionError):
    kind = "connection"


class DriverOSError(DriverError, OSError):
    kind = "os error"


class MethodNotFound(DriverNotImplemented, AttributeError):
    """No such exported method. Also a ``DriverNotImplemented``, as upstream's clients report it."""

    kind = "not found"


_FROM_CODE: dict[grpc.StatusCode, type[DriverError]] = {
    grpc.StatusCode.NOT_FOUND: MethodNotFound,
    grpc.StatusCode.UNIMPLEMENTED: DriverNotImplemented,
    grpc.StatusCode.INVALID_ARGUMENT: DriverInvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DriverTimeout,
    grpc.StatusCode.UNAVAILABLE: DriverConnectionError,
    grpc.StatusCode.INTERNAL: DriverOSError,
}


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code an exporter answers with when a driver raised ``exc``."""
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, ConnectionError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, OSError):
        return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.UNKNOWN


def message_for(exc: BaseException) -> str:
    """The details an exporter sends: the driver's message, or its class if it gave none."""
    text = str(exc)
    return text if text else type(exc).__name__


def error_from_rpc(err: grpc.RpcError, *, address: str, target: str = "", method: str = "") -> Exception:
    """The exception a client raises for a failed RPC."""
    code, details = err.code(), err.details() or ""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationError(f"exporter at {address} refused the passphrase: {details}")
    if code == grpc.StatusCode.UNAVAILABLE and not _from_driver(err):
        if "ping timeout" in details:
            return ConnectError(
                f"exporter at {address} stopped answering: a ping went unanswered for seconds (is it frozen or "
                f"suspended, or the network to it gone?): {details}"
            )
        return ConnectError(f"exporter at {address} is unavailable: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:  # no driver error maps here: only the lease guard sends it
        where = f" {target + '.' if target else ''}{method}" if method else ""
        return LeaseError(f"exporter at {address} refused{where}: {details}")
    if code == grpc.StatusCode.CANCELLED:
        return ConnectError(f"call to exporter at {address} was cancelled: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (too_big := _TOO_BIG.match(details)):
        details = _too_big(*too_big.groups(), address=address)
    return _FROM_CODE.get(code, DriverError)(details, target=target, method=method)


# gRPC's words for a message over a side's limit: "SERVER: Received message larger than max (20971520 vs. 16777216)"
_TOO_BIG = re.compile(r"(SERVER|CLIENT): (Received|Sent) message larger than max \((\d+) vs\. (\d+)\)")


def _too_big(side: str, verb: str, size: str, limit: str, *, address: str) -> str:
    """What a message over a limit was, and how to raise the limit."""
    mib = 1024 * 1024
    what = f"{int(size) / mib:.1f} MiB"
    most = f"{int(limit) / mib:g} MiB"
    if (side, verb) == ("SERVER", "Received"):
        return (
            f"the request is {what}, more than the exporter at {address} takes ({most}): send less, or raise its limit "
            "with `jumpstarter run --max-message-size MIB` (or JUMPSTARTER_MAX_MESSAGE_SIZE)"
        )
    if side == "SERVER":
        return f"the exporter at {address} can't send its reply of {what}: more than its limit ({most})"
    if verb == "Sent":
        return f"the request is {what}, more than a client sends ({most})"
    return f"the exporter's reply is {what}, more than a client takes ({most})"


DRIVER_ERROR_KEY = "x-jumpstarter-driver-error"


def _from_driver(err: grpc.RpcError) -> bool:
    """True when an UNAVAILABLE came from a driver's ConnectionError, not the transport."""
    trailers = err.trailing_metadata() or ()
    return any(key == DRIVER_ERROR_KEY for key, _ in trailers)
