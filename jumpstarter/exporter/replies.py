"""How a call answers: a response's id, a result encoded, and the ends of a call that fails (a request refused,
a driver that raised, a result that can't be sent)."""

from __future__ import annotations

import itertools
import logging
from typing import Any, NoReturn
from uuid import uuid4

import grpc

from jumpstarter.common.secrets import redact, redacted_traceback
from jumpstarter.errors import DRIVER_ERROR_KEY, message_for, status_for
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.values import ValueTypeError, encode_result

log = logging.getLogger("jumpstarter.exporter")

# A response's ``uuid`` (upstream's exporter puts a fresh uuid4 there; no client reads it): a uuid4 made once, its
# last twelve digits a counter. uuid4() per response took some 10 us of a unary call's time on the event loop.
_REPLY_PREFIX = str(uuid4())[:24]
_replies = itertools.count()


def reply_id() -> str:
    """A uuid4-shaped id, different for each response of this process (until 16**12 of them)."""
    return f"{_REPLY_PREFIX}{next(_replies) & 0xFFFF_FFFF_FFFF:012x}"


async def refuse(context: ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End a request that can't be served as asked, with one line in the log (no traceback: nothing broke here)."""
    log.info("refused a request: %s", message)
    await context.abort(code, message)


async def fail(exc: Exception, where: str, context: ServicerContext) -> NoReturn:
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


async def unsendable(exc: ValueTypeError, where: str, context: ServicerContext) -> NoReturn:
    log.error("%s returned a value that can't be sent: %s", where, exc)
    await context.abort(grpc.StatusCode.UNKNOWN, f"the driver returned a value that can't be sent: {exc}")


async def encode_or_fail(result: Any, response: Any, where: str, context: ServicerContext) -> None:
    """``result`` into ``response``; a result that can't be sent fails the call."""
    try:
        encode_result(result, response)
    except ValueTypeError as exc:
        await unsendable(exc, where, context)
