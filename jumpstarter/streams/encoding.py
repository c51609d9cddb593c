"""Compressed byte streams and uploads: gzip, xz, bz2 and zstd, named or recognised from the data.

This is the one place that knows the codecs; the client's upload path uses it too. zstd needs Python 3.14's
``compression.zstd`` or the ``backports.zstd`` package; it is imported only when zstd is used, so that without it
the other formats still work and asking for zstd says what to install.
"""

from __future__ import annotations

import bz2
import logging
import lzma
import sys
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from types import ModuleType
from typing import Any, NamedTuple

from anyio import ClosedResourceError, EndOfStream
from anyio.abc import AnyByteStream, ObjectStream

logger = logging.getLogger(__name__)

ZSTD_HINT = "zstd needs Python 3.14 or the backports.zstd package: pip install backports.zstd"


class Compression(StrEnum):
    """A compression format, by the name a ``content_encoding`` or ``--compression`` option gives."""

    GZIP = "gzip"
    XZ = "xz"
    BZ2 = "bz2"
    ZSTD = "zstd"


@dataclass(frozen=True)
class FileSignature:
    """The bytes that data compressed with ``compression`` starts with."""

    signature: bytes
    compression: Compression


COMPRESSION_SIGNATURES: tuple[FileSignature, ...] = (
    FileSignature(b"\x1f\x8b\x08", Compression.GZIP),  # magic, then deflate: the only method gzip defines
    FileSignature(b"\xfd7zXZ\x00", Compression.XZ),
    FileSignature(b"BZh", Compression.BZ2),
    FileSignature(b"\x28\xb5\x2f\xfd", Compression.ZSTD),  # the frame magic 0xFD2FB528, little-endian
)

SIGNATURE_BUFFER_SIZE = 8  # bytes to look at before deciding: more than the longest signature


def detect_compression_from_signature(data: bytes) -> Compression | None:
    """The format ``data`` (the start of a file or stream) is compressed with; None if it isn't one of ours."""
    return next((sig.compression for sig in COMPRESSION_SIGNATURES if data.startswith(sig.signature)), None)


def _zstd() -> ModuleType:
    try:
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
    except ImportError as exc:  # also a Python 3.14 built without libzstd
        raise ModuleNotFoundError(ZSTD_HINT, name=exc.name) from None
    return zstd


class _Codec(NamedTuple):
    compressor: Callable[[], Any]
    decompressor: Callable[[], Any]
    error: type[Exception]  # what the decompressor raises for data that isn't valid


def _codec(compression: Compression | str) -> _Codec:
    """Raises ValueError for a name that isn't a Compression, ModuleNotFoundError when zstd isn't installed."""
    match Compression(compression):
        case Compression.GZIP:  # wbits: 31 writes a gzip header, 47 reads a gzip or a zlib one
            return _Codec(partial(zlib.compressobj, wbits=31), partial(zlib.decompressobj, wbits=47), zlib.error)
        case Compression.XZ:
            return _Codec(lzma.LZMACompressor, lzma.LZMADecompressor, lzma.LZMAError)
        case Compression.BZ2:
            return _Codec(bz2.BZ2Compressor, bz2.BZ2Decompressor, OSError)
        case Compression.ZSTD:
            zstd = _zstd()
            return _Codec(zstd.ZstdCompressor, zstd.ZstdDecompressor, zstd.ZstdError)


class Decompressor:
    """Decompresses one format chunk by chunk, taking what the format's own tool takes.

    Members written one after another (``cat a.gz b.gz``, parallel compressors) decode as one stream; zero
    padding after a member is skipped, and other bytes there are ignored with a warning. Invalid data, and
    (at ``flush()``) data that stops inside a member, raise RuntimeError naming the format.
    """

    def __init__(self, compression: Compression | str) -> None:
        self.compression = Compression(compression)
        self._codec = _codec(self.compression)
        self._magic = next(sig.signature for sig in COMPRESSION_SIGNATURES if sig.compression == self.compression)
        self._member = self._codec.decompressor()
        self._started = False  # some input went into a member
        self._held = b""  # bytes after a member, too few yet to tell whether another member starts
        self._ignoring = False

    def decompress(self, data: bytes) -> bytes:
        out = []
        data, self._held = self._held + data, b""
        try:
            while data and not self._ignoring:
                if self._member.eof:
                    data = data.lstrip(b"\0")
                    if self._magic.startswith(data):
                        self._held = data  # empty, or the start of a signature split across chunks
                        break
                    if not data.startswith(self._magic):
                        logger.warning("ignoring the data after the end of the %s stream", self.compression)
                        self._ignoring = True
                        break
                    self._member = self._codec.decompressor()
                self._started = True
                out.append(self._member.decompress(data))
                data = self._member.unused_data if self._member.eof else b""
        except self._codec.error as exc:
            raise RuntimeError(f"Failed to decompress {self.compression}: {exc}") from exc
        return b"".join(out)

    def flush(self) -> bytes:
        """Call once the input has ended; nothing is held back, so this only checks the data was complete."""
        if self._started and not self._member.eof:
            raise RuntimeError(f"Failed to decompress {self.compression}: the data ends inside a compressed stream")
        return b""


def create_decompressor(compression: Compression | str) -> Decompressor:
    """A Decompressor for ``compression``; raises ValueError for an unknown format and, for zstd without a
    codec installed, ModuleNotFoundError saying what to install."""
    return Decompressor(compression)


async def decompress_chunks(source: AsyncIterable[bytes], decompressor: Decompressor | None) -> AsyncIterator[bytes]:
    """``source``'s chunks through ``decompressor`` (None: unchanged), leaving out empty ones."""
    async for chunk in source:
        if data := (decompressor.decompress(chunk) if decompressor else chunk):
            yield data
    if decompressor:
        decompressor.flush()


@dataclass(kw_only=True)
class CompressedStream(ObjectStream[bytes]):
    """``stream`` with compressed data on it: what is sent is compressed, what is received is decompressed."""

    stream: AnyByteStream
    decompressor: Decompressor
    compressor: Any  # zlib/lzma/bz2/zstd compressor object; None once the end of the data was sent

    _sent: bool = field(init=False, default=False, repr=False)
    _ended: bool = field(init=False, default=False, repr=False)

    async def send(self, item: bytes) -> None:
        if self.compressor is None:
            raise ClosedResourceError
        self._sent = True
        if data := self.compressor.compress(item):
            await self.stream.send(data)

    async def receive(self) -> bytes:
        while not self._ended:
            try:
                chunk = await self.stream.receive()
            except EndOfStream:
                self._ended = True
                self.decompressor.flush()
                break
            if data := self.decompressor.decompress(chunk):
                return data
        raise EndOfStream

    async def send_eof(self) -> None:
        await self._finish_sending()
        await self.stream.send_eof()

    async def aclose(self) -> None:
        """Closes ``stream``, after completing the compressed data if some was sent without ``send_eof()``."""
        try:
            if self._sent:
                await self._finish_sending()
        finally:
            await self.stream.aclose()

    async def _finish_sending(self) -> None:
        if self.compressor is not None:
            tail, self.compressor = self.compressor.flush(), None
            await self.stream.send(tail)

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.stream.extra_attributes


@dataclass(kw_only=True)
class ZlibCompressedStream(CompressedStream):
    """Upstream's name for the gzip stream; CompressedStream already handles every format alike."""


def compress_stream(stream: AnyByteStream, compression: Compression | str | None) -> AnyByteStream:
    """``stream`` carrying ``compression``-compressed data (see CompressedStream); None gives ``stream`` itself."""
    if compression is None:
        return stream
    cls = ZlibCompressedStream if compression == Compression.GZIP else CompressedStream
    return cls(stream=stream, compressor=_codec(compression).compressor(), decompressor=Decompressor(compression))


@dataclass(kw_only=True)
class AutoDecompressIterator(AsyncIterator[bytes]):
    """``source``'s bytes, decompressed if they start as gzip, xz, bz2 or zstd data and unchanged otherwise.

    For an image that may or may not be compressed, whatever its name says.
    """

    source: AsyncIterator[bytes]
    _chunks: AsyncIterator[bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._chunks = self._decompressed()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def _decompressed(self) -> AsyncIterator[bytes]:
        source = aiter(self.source)
        head = b""
        async for chunk in source:
            head += chunk
            if len(head) >= SIGNATURE_BUFFER_SIZE:
                break
        compression = detect_compression_from_signature(head)
        decompressor = create_decompressor(compression) if compression else None
        async for data in decompress_chunks(_prepend(head, source), decompressor):
            yield data


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk
