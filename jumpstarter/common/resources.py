"""How a driver call names data that travels beside it: an upload from the client, or a presigned HTTP request.

A driver method that takes a file receives one of these (as JSON) in place of the bytes; upstream's drivers
build ``PresignedRequestResource`` themselves and use pydantic's methods on all of them, so they are
pydantic models, told apart by ``kind``.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from jumpstarter.extras import missing_extra

try:
    from pydantic import BaseModel, Field, Json
except ModuleNotFoundError as exc:
    raise missing_extra(exc, __name__) from None

__all__ = ["ClientStreamResource", "PresignedRequestResource", "Resource", "ResourceMetadata"]


class ClientStreamResource(BaseModel):
    """Bytes the client streams to the exporter, identified by the stream's ``uuid``."""

    kind: Literal["client_stream"] = "client_stream"
    uuid: UUID
    x_jmp_content_encoding: str | None = None  # the compression the client applied, if any


class PresignedRequestResource(BaseModel):
    """A request the exporter makes itself (a presigned URL), so the bytes need not pass through the client."""

    kind: Literal["presigned_request"] = "presigned_request"
    headers: dict[str, str]
    url: str
    method: Literal["GET", "PUT"]


Resource = Annotated[ClientStreamResource | PresignedRequestResource, Field(discriminator="kind")]
"""Either kind of resource; validating one picks the class from ``kind``."""


class ResourceMetadata(BaseModel):
    """What opens a resource stream: the resource as a JSON string, and the encodings the reader accepts."""

    resource: Json[Resource]
    x_jmp_accept_encoding: str | None = None
