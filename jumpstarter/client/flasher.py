"""``FlasherClient``: the client of a ``FlasherInterface`` driver, under upstream Jumpstarter's names.

``flash()`` sends an image to the driver, ``dump()`` reads one back. What the path names decides how:

- ``http://`` / ``https://`` URLs are handed to the exporter as a presigned request, so it downloads the
  image itself instead of the bytes going through this machine (``compression`` does not apply then);
- anything else is a local file (relative to the working directory), streamed as an upload.

OCI references (``oci://...``) are not special here, as upstream's base client: they read as local paths.
Drivers that take them (QEMU's flasher) check for them in their client's ``flash()`` before calling ours.
"""

from __future__ import annotations

import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal, cast

import anyio
from anyio import BrokenResourceError, EndOfStream
from anyio.abc import ObjectStream

from jumpstarter.client.adapters import blocking
from jumpstarter.client.base import DriverClient
from jumpstarter.client.decorators import driver_click_group
from jumpstarter.client.uploads import file_chunks
from jumpstarter.extras import missing_extra

try:
    import click

    from jumpstarter.common.resources import PresignedRequestResource
    from jumpstarter.streams.encoding import Compression
    from jumpstarter.streams.progress import ProgressAttribute
except ModuleNotFoundError as exc:
    if not exc.name or exc.name.startswith("jumpstarter"):
        raise
    raise missing_extra(exc, __name__) from None

__all__ = ["FlasherClient", "FlasherClientInterface", "PathBuf"]

PathBuf = str | PathLike
"""What ``flash()``/``dump()`` take as a path: a string (local path or URL) or a path object."""


@dataclass(kw_only=True)
class _AsyncIteratorStream(ObjectStream[bytes]):
    """An async generator of chunks as the read-only object stream ``resource_async()`` uploads from.

    ``total`` (the image size) is offered as ``ProgressAttribute.total`` so a progress display knows the end.
    """

    iterator: AsyncGenerator[bytes, None]
    total: int | None = None

    async def receive(self) -> bytes:
        try:
            return await self.iterator.__anext__()
        except StopAsyncIteration:
            raise EndOfStream from None

    async def send(self, item: bytes) -> None:
        raise BrokenResourceError("this stream only gives bytes: it is an image being uploaded")

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        await self.iterator.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        total = self.total
        if total is not None and total > 0:
            return {ProgressAttribute.total: lambda: float(total)}
        return {}


@dataclass(kw_only=True)
class _FileWriteObjectStream(ObjectStream[bytes]):
    """A local file as the write-only object stream a dump is received into; the file is created on first data."""

    path: Path
    _file: Any = field(default=None, init=False)

    async def receive(self) -> bytes:
        raise EndOfStream

    async def send(self, item: bytes) -> None:
        if self._file is None:
            self._file = await anyio.open_file(self.path, "wb")
        await self._file.write(item)

    async def send_eof(self) -> None:
        await self._close_file()

    async def aclose(self) -> None:
        await self._close_file()

    async def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await file.aclose()


def _parse_path(path: PathBuf) -> tuple[Path, None] | tuple[None, str]:
    """``(absolute local path, None)`` for a file, ``(None, url)`` for an http(s) URL."""
    text = str(path)
    if text.startswith(("http://", "https://")):
        return None, text
    return Path(path).resolve(), None


@blocking
@asynccontextmanager
async def _local_file_adapter(
    *,
    client: DriverClient,
    path: Path,
    mode: Literal["rb", "wb"] = "rb",
    compression: Compression | None = None,
) -> AsyncIterator[Any]:
    """A resource handle for a local file: its bytes uploaded ("rb"), or a dump written into it ("wb")."""
    stream: ObjectStream[bytes]
    if mode == "rb":
        size = path.stat().st_size  # a missing file fails here, before anything is sent
        stream = _AsyncIteratorStream(iterator=file_chunks(path), total=size)
    else:
        stream = _FileWriteObjectStream(path=path)
    async with client.resource_async(stream, content_encoding=compression) as handle:
        yield handle


@blocking
@asynccontextmanager
async def _http_url_adapter(
    *,
    client: DriverClient,
    url: str,
    mode: Literal["rb", "wb"] = "rb",
) -> AsyncIterator[dict[str, Any]]:
    """A resource handle for an http(s) URL: the exporter GETs the image from it ("rb") or PUTs a dump ("wb")."""
    method: Literal["GET", "PUT"] = "GET" if mode == "rb" else "PUT"
    yield PresignedRequestResource(headers={}, url=url, method=method).model_dump(mode="json")


def _warn_compression_ignored(compression: Compression | None) -> None:
    if compression is not None:
        # stacklevel 3: past this helper, at the caller of the method that got the URL
        warnings.warn("compression parameter is ignored for HTTP URLs", stacklevel=3)


class FlasherClientInterface(metaclass=ABCMeta):
    """What a flasher client offers: ``flash()``, ``dump()`` and their CLI."""

    @abstractmethod
    def flash(
        self,
        path: PathBuf | dict[str, PathBuf],
        *,
        target: str | None = None,
        compression: Compression | None = None,
    ) -> Any:
        """Flash image to DUT"""

    @abstractmethod
    def dump(
        self,
        path: PathBuf,
        *,
        target: str | None = None,
        compression: Compression | None = None,
    ) -> Any:
        """Dump image from DUT"""

    def cli(self) -> click.Group:
        """``flash FILE`` / ``flash -t name:file ...`` and ``dump FILE [--target T]``."""

        @driver_click_group(self)
        def base() -> None:
            """Generic flasher interface"""

        @base.command()
        @click.argument("file", nargs=-1, required=False)
        @click.option("--target", "-t", "target_specs", multiple=True, help="name:file")
        @click.option("--compression", type=click.Choice(Compression, case_sensitive=False))
        def flash(file: tuple[str, ...], target_specs: tuple[str, ...], compression: Compression | None) -> None:
            if target_specs:
                images: dict[str, str] = {}
                for spec in target_specs:
                    name, sep, image = spec.partition(":")
                    if not sep:
                        raise click.ClickException(f"Invalid target spec '{spec}', expected name:file")
                    images[name] = image
                self.flash(cast(dict[str, PathBuf], images), compression=compression)
                return
            if not file:
                raise click.ClickException("FILE argument is required unless --target/-t is used")
            self.flash(file[0], target=None, compression=compression)

        @base.command()
        @click.argument("file")
        @click.option("--target", type=str)
        @click.option("--compression", type=click.Choice(Compression, case_sensitive=False))
        def dump(file: str, target: str | None, compression: Compression | None) -> None:
            """Dump image from DUT to file"""
            self.dump(file, target=target, compression=compression)

        return base


class FlasherClient(FlasherClientInterface, DriverClient):
    """Client of a ``FlasherInterface`` driver: calls its ``flash(handle, target)`` and ``dump(handle, target)``."""

    def _flash_single(self, image: PathBuf, *, target: str | None, compression: Compression | None) -> Any:
        parsed = _parse_path(image)  # (local path, None) or (None, URL)
        if parsed[1] is not None:
            _warn_compression_ignored(compression)
            with _http_url_adapter(client=self, url=parsed[1], mode="rb") as handle:
                return self.call("flash", handle, target)
        else:
            with _local_file_adapter(client=self, path=parsed[0], mode="rb", compression=compression) as handle:
                return self.call("flash", handle, target)

    def flash(
        self,
        path: PathBuf | dict[str, PathBuf],
        *,
        target: str | None = None,
        compression: Compression | None = None,
    ) -> Any:
        """Flash the image at ``path`` to ``target``; or, given ``{target: path}``, each image to its target.

        Returns the driver's result; for a mapping, ``{target: result}`` (the images go one after another).
        """
        if isinstance(path, dict):
            if target is not None:
                from jumpstarter.common.exceptions import ArgumentError

                raise ArgumentError("'target' parameter is not valid when flashing multiple images")
            return {
                part: self._flash_single(image, target=part, compression=compression) for part, image in path.items()
            }
        return self._flash_single(path, target=target, compression=compression)

    def dump(
        self,
        path: PathBuf,
        *,
        target: str | None = None,
        compression: Compression | None = None,
    ) -> Any:
        """Dump ``target`` (or the driver's default) from the device into the file or URL ``path``."""
        parsed = _parse_path(path)  # (local path, None) or (None, URL)
        if parsed[1] is not None:
            _warn_compression_ignored(compression)
            with _http_url_adapter(client=self, url=parsed[1], mode="wb") as handle:
                return self.call("dump", handle, target)
        else:
            with _local_file_adapter(client=self, path=parsed[0], mode="wb", compression=compression) as handle:
                return self.call("dump", handle, target)
