"""An aiohttp response body as a receive-only anyio byte stream (for downloads a driver reads like an upload)."""

from __future__ import annotations

from dataclasses import dataclass

from anyio import BrokenResourceError, EndOfStream
from anyio.abc import ObjectStream

from jumpstarter.extras import missing_extra

try:
    from aiohttp import ClientError, StreamReader
except ModuleNotFoundError as exc:
    raise missing_extra(exc, __name__) from None


@dataclass(frozen=True, kw_only=True, slots=True)
class AiohttpStreamReaderStream(ObjectStream[bytes]):
    """Chunks of ``reader`` as they arrive; a failing connection shows as ``BrokenResourceError``, as for any stream."""

    reader: StreamReader

    async def send(self, item: bytes) -> None:
        raise BrokenResourceError("an HTTP response body can't be written to")

    async def receive(self) -> bytes:
        try:
            chunk = await self.reader.readany()
        except ClientError as exc:
            raise BrokenResourceError from exc
        if not chunk:
            raise EndOfStream
        return chunk

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass  # the response that owns the reader is closed by whoever opened it
