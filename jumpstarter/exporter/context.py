"""The type of the ``context`` gRPC hands the exporter's service methods (grpc ships no type information)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

import grpc

Metadata = Sequence[tuple[str, str]]


class ServicerContext(Protocol):
    """What the services use of a ``grpc.aio.ServicerContext``; typed so that the checker knows ``abort()``
    never returns."""

    def invocation_metadata(self) -> Metadata | None: ...
    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None: ...
    async def send_initial_metadata(self, initial_metadata: Metadata) -> None: ...
    async def write(self, message: Any) -> None: ...
    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn: ...
    def add_done_callback(self, callback: Callable[[Any], None]) -> None: ...
