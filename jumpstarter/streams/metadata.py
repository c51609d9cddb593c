"""Metadata (gRPC's key/value strings) carried along with a byte stream as an anyio typed attribute."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from anyio import TypedAttributeSet, typed_attribute
from anyio.abc import AnyByteStream, ObjectStream


class MetadataStreamAttributes(TypedAttributeSet):
    """``stream.extra(MetadataStreamAttributes.metadata)``: the metadata a stream was opened with."""

    metadata: dict[str, str] = typed_attribute()


@dataclass(frozen=True, kw_only=True, slots=True)
class MetadataStream(ObjectStream[bytes]):
    """``stream`` unchanged, plus ``metadata`` merged over any metadata ``stream`` already carries.

    Lets code that only holds the stream (a driver reading an upload) see how the stream was requested.
    """

    stream: AnyByteStream
    metadata: dict[str, str]

    async def send(self, item: bytes) -> None:
        await self.stream.send(item)

    async def receive(self) -> bytes:
        return await self.stream.receive()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        inner: Mapping[Any, Callable[[], Any]] = self.stream.extra_attributes
        inner_metadata: Callable[[], dict[str, str]] = inner.get(MetadataStreamAttributes.metadata, dict)
        return {**inner, MetadataStreamAttributes.metadata: lambda: inner_metadata() | self.metadata}
