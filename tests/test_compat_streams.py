"""jumpstarter.streams: the stream helpers upstream's drivers and clients import, used through their public names."""

# These tests call as upstream's driver packages and their tests do: loose argument types, methods patched.
# mypy: disable-error-code="arg-type"

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import anyio
import pytest
from anyio import ClosedResourceError, EndOfStream, create_memory_object_stream
from anyio.abc import ObjectStream
from anyio.from_thread import start_blocking_portal
from anyio.streams.stapled import StapledObjectStream

from jumpstarter.streams.blocking import BlockingStream
from jumpstarter.streams.common import create_memory_stream, forward_stream
from jumpstarter.streams.encoding import (
    AutoDecompressIterator,
    Compression,
    compress_stream,
    create_decompressor,
    detect_compression_from_signature,
)
from jumpstarter.streams.metadata import MetadataStream, MetadataStreamAttributes

pytestmark = pytest.mark.anyio

DATA = b"".join(b"line %d of a disk image\n" % i for i in range(5000))


def zstd_module():
    """The zstd codec when one is installed, else None (it is optional below Python 3.14)."""
    try:
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
    except ImportError:
        return None
    return zstd


ZSTD = zstd_module()
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "xz": lzma.compress,
    "bz2": bz2.compress,
    **({"zstd": ZSTD.compress} if ZSTD else {}),
}


def buffer() -> StapledObjectStream[bytes]:
    """A stream that receives what was sent to it."""
    send, receive = create_memory_object_stream[bytes](1000)
    return StapledObjectStream(send, receive)


async def read_all(stream: ObjectStream[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def auto_decompressed(data: bytes, size: int = 1000) -> bytes:
    return b"".join([chunk async for chunk in AutoDecompressIterator(source=chunked(data, size))])


# encoding


def test_compression_names_are_upstreams():
    assert [c.value for c in Compression] == ["gzip", "xz", "bz2", "zstd"]
    assert Compression("xz") is Compression.XZ and Compression.GZIP == "gzip"


@pytest.mark.parametrize("compression", [None, *COMPRESSORS])
async def test_compress_stream_round_trips(compression):
    async with buffer() as wire:
        stream = compress_stream(wire, compression)
        for i in range(0, len(DATA), 4096):
            await stream.send(DATA[i : i + 4096])
        await stream.send_eof()
        with pytest.raises(ClosedResourceError):
            await stream.send(b"too late")
        assert await read_all(stream) == DATA


@pytest.mark.parametrize("compression", COMPRESSORS)
async def test_compressed_on_the_wire_and_plain_at_both_ends(compression):
    """Two peers each wrapping their end: the bytes between them are really compressed, in the format named."""
    left, right = create_memory_stream()
    sender, receiver = compress_stream(left, compression), compress_stream(right, compression)
    async with sender, receiver:
        await sender.send(DATA)
        await sender.send_eof()
        wire = await read_all(right)
    assert detect_compression_from_signature(wire) == compression
    assert len(wire) < len(DATA) // 4
    assert create_decompressor(compression).decompress(wire) == DATA


async def test_compress_stream_refuses_an_unknown_format():
    async with buffer() as wire:
        with pytest.raises(ValueError, match="'lz4' is not a valid Compression"):
            compress_stream(wire, "lz4")


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_formats_are_recognised_from_their_first_bytes(compression):
    compressed = COMPRESSORS[compression](b"some data")
    assert detect_compression_from_signature(compressed) == compression
    assert detect_compression_from_signature(compressed[:2]) is None  # a truncated signature isn't one


def test_other_data_is_not_taken_for_compressed():
    for data in (b"", b"hello world", DATA, b"\x1f\x8b", b"BZ"):
        assert detect_compression_from_signature(data) is None


@pytest.mark.parametrize("size", [1, 7, 65536])
@pytest.mark.parametrize("compression", COMPRESSORS)
async def test_auto_decompress_detects_each_format(compression, size):
    assert await auto_decompressed(COMPRESSORS[compression](DATA), size) == DATA


async def test_auto_decompress_passes_other_data_through():
    assert await auto_decompressed(DATA, 3) == DATA
    assert await auto_decompressed(b"short") == b"short"
    assert await auto_decompressed(b"") == b""


async def test_auto_decompress_reads_an_anyio_stream():
    """Upstream's qemu driver iterates a resource stream; an anyio stream is an async iterator too."""
    async with buffer() as stream:
        await stream.send(gzip.compress(DATA))
        await stream.send_eof()
        assert b"".join([chunk async for chunk in AutoDecompressIterator(source=stream)]) == DATA


@pytest.mark.parametrize("size", [1, 100])  # 1: the next member's signature comes a byte at a time
@pytest.mark.parametrize("compression", COMPRESSORS)
async def test_concatenated_members_decode_as_one(compression, size):
    """What `cat a.gz b.gz` and the parallel compressors (pigz, pbzip2) write."""
    compress = COMPRESSORS[compression]
    joined = compress(DATA[:1000]) + compress(DATA[1000:])
    assert await auto_decompressed(joined, size) == DATA
    assert await auto_decompressed(joined + b"\0" * 512, size) == DATA  # zero padding, as on a tape


async def test_trailing_data_after_the_stream_is_ignored_with_a_warning(caplog):
    assert await auto_decompressed(gzip.compress(DATA) + b"garbage", 100) == DATA
    assert "ignoring the data after the end of the gzip stream" in caplog.text


async def test_corrupt_and_truncated_data_fail_naming_the_format():
    with pytest.raises(RuntimeError, match=r"^Failed to decompress gzip: "):
        await auto_decompressed(b"\x1f\x8b\x08" + b"corrupted data here")
    with pytest.raises(RuntimeError, match=r"^Failed to decompress bz2: "):
        await auto_decompressed(b"BZh9" + b"\xff" * 64)
    with pytest.raises(RuntimeError, match=r"^Failed to decompress xz: the data ends inside a compressed stream"):
        await auto_decompressed(lzma.compress(DATA)[:-10])
    async with buffer() as wire:
        await wire.send(gzip.compress(DATA)[:-4])
        await wire.send_eof()
        with pytest.raises(RuntimeError, match="^Failed to decompress gzip: the data ends inside"):
            await read_all(compress_stream(wire, "gzip"))


def test_without_a_zstd_codec_only_zstd_fails_and_says_what_to_install():
    """The module imports without one; asking for zstd names the package."""
    code = (
        "import sys\n"
        "for name in ('backports', 'backports.zstd', 'compression', 'compression.zstd'):\n"
        "    sys.modules[name] = None\n"
        "from jumpstarter.streams.encoding import compress_stream, create_decompressor\n"
        "import gzip\n"
        "assert create_decompressor('gzip').decompress(gzip.compress(b'ok')) == b'ok'\n"
        "for make in (lambda: create_decompressor('zstd'), lambda: compress_stream(object(), 'zstd')):\n"
        "    try:\n"
        "        make()\n"
        "    except ModuleNotFoundError as exc:\n"
        "        print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    hint = "zstd needs Python 3.14 or the backports.zstd package: pip install backports.zstd"
    assert result.stdout.splitlines() == [hint, hint]


def test_compressed_uploads_reach_the_driver_plain(board_client):
    """The client decompresses an upload with these codecs, concatenated members included."""
    from jumpstarter_driver_demo.client import Chunks

    async def upload(data: bytes, encoding: str) -> dict:
        async with board_client.resource_async(Chunks(data, size=1000), encoding) as handle:
            return await board_client.call_async("checksum", handle)

    expected = {"size": len(DATA), "sha256": hashlib.sha256(DATA).hexdigest()}
    for encoding, compress in COMPRESSORS.items():
        assert anyio.run(upload, compress(DATA[:777]) + compress(DATA[777:]), encoding) == expected, encoding
    if ZSTD is None:
        with pytest.raises(NotImplementedError, match=r"'zstd' is not supported \(zstd needs .* backports\.zstd\)"):
            anyio.run(upload, b"", "zstd")


# common


async def test_memory_stream_pair_is_connected_both_ways():
    a, b = create_memory_stream()
    async with a, b:
        await a.send(b"to b")
        await b.send(b"to a")
        assert (await b.receive(), await a.receive()) == (b"to b", b"to a")
        await a.send_eof()
        with pytest.raises(EndOfStream):
            await b.receive()
        await b.send(b"still to a")  # only a's direction ended
        assert await a.receive() == b"still to a"


async def test_forward_stream_copies_both_ways_and_passes_each_end_on():
    a, a_peer = create_memory_stream()
    b, b_peer = create_memory_stream()
    with anyio.fail_after(5):
        async with a_peer, b_peer, forward_stream(a, b):
            await a_peer.send(b"request")
            assert await b_peer.receive() == b"request"
            await b_peer.send(b"reply")
            assert await a_peer.receive() == b"reply"

            await a_peer.send_eof()  # a half close: the end reaches b's peer, the reply can still come
            with pytest.raises(EndOfStream):
                await b_peer.receive()
            await b_peer.send(b"late reply")
            assert await a_peer.receive() == b"late reply"
            await b_peer.send_eof()
        # leaving waited for both directions to end, then closed both streams
        with pytest.raises(ClosedResourceError):
            await a.send(b"x")
        with pytest.raises(ClosedResourceError):
            await b.receive()


async def test_forward_stream_ends_when_one_side_goes_away():
    a, a_peer = create_memory_stream()
    b, b_peer = create_memory_stream()
    with anyio.fail_after(5):
        async with a_peer, forward_stream(a, b):
            await b_peer.aclose()  # gone: nothing more comes from it and nothing can reach it
            with pytest.raises(EndOfStream):
                await a_peer.receive()
            await a_peer.send(b"into the void")  # its copy finds b's peer gone and stops


async def test_an_error_inside_forward_stream_stops_the_copying():
    """Without waiting for either side; the error comes out of the task group, in an ExceptionGroup as upstream's."""
    a, a_peer = create_memory_stream()
    b, b_peer = create_memory_stream()
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as raised:
        async with a_peer, b_peer, forward_stream(a, b):
            raise ValueError("boom")
    assert [str(exc) for exc in raised.value.exceptions] == ["boom"]


# metadata


async def test_metadata_stream_carries_metadata_over_what_the_stream_had():
    a, b = create_memory_stream()
    inner = MetadataStream(stream=a, metadata={"request": "r", "kind": "inner"})
    outer = MetadataStream(stream=inner, metadata={"kind": "outer"})
    assert outer.extra(MetadataStreamAttributes.metadata) == {"request": "r", "kind": "outer"}
    assert MetadataStream(stream=b, metadata={"a": "1"}).extra(MetadataStreamAttributes.metadata) == {"a": "1"}
    with pytest.raises(anyio.TypedAttributeLookupError):
        a.extra(MetadataStreamAttributes.metadata)
    async with outer, b:
        await outer.send(b"through")
        assert await b.receive() == b"through"
        await b.send(b"back")
        assert await outer.receive() == b"back"
        await outer.send_eof()
        with pytest.raises(EndOfStream):
            await b.receive()


# progress


@pytest.fixture
def progress():
    """jumpstarter.streams.progress, which needs rich (the upstream extra)."""
    return pytest.importorskip("jumpstarter.streams.progress")


class SizedSource(ObjectStream[bytes]):
    """Gives ``chunks`` and offers ``attributes``, as an upload's source does; records what is sent to it."""

    def __init__(self, chunks: list[bytes], attributes: dict) -> None:
        self.chunks, self.attributes, self.sent, self.closed = list(chunks), attributes, b"", False

    async def receive(self) -> bytes:
        if not self.chunks:
            raise EndOfStream
        return self.chunks.pop(0)

    async def send(self, item: bytes) -> None:
        self.sent += item

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True

    @property
    def extra_attributes(self) -> dict:
        return self.attributes


async def test_progress_stream_logs_the_count_against_the_streams_total(progress, caplog):
    caplog.set_level("INFO", logger=progress.__name__)
    source = SizedSource([b"12345", b"67890"], {progress.ProgressAttribute.total: lambda: 10.0})
    stream = progress.ProgressStream(stream=source, logging=True)
    assert stream.extra(progress.ProgressAttribute.total) == 10.0  # the source's attributes show through
    assert await read_all(stream) == b"1234567890"
    await stream.send(b"abc")
    await stream.send_eof()
    await stream.aclose()
    assert source.sent == b"abc" and source.closed
    received, sent = [record.getMessage() for record in caplog.records]
    assert received.startswith("received 10 bytes of 10 bytes (100%)")  # then the speed, if it was measured
    assert sent.startswith("sent 3 bytes of 10 bytes (30%)")


async def test_progress_stream_without_a_total_or_logging_passes_data_unchanged(progress, monkeypatch, caplog):
    monkeypatch.setenv("TERM", "xterm")  # a bar, not log lines
    stream = progress.ProgressStream(stream=SizedSource([b"a", b"b"], {}))
    assert await read_all(stream) == b"ab"
    await stream.aclose()
    assert not caplog.records


# blocking


def test_blocking_stream_from_a_thread():
    a, b = create_memory_stream()
    with start_blocking_portal() as portal:
        stream = BlockingStream(stream=a, portal=portal)
        stream.send(b"ping")
        assert portal.call(b.receive) == b"ping"
        portal.call(b.send, b"pong")
        assert stream.receive() == b"pong"
        stream.send_eof()
        with pytest.raises(EndOfStream):
            portal.call(b.receive)
        portal.call(b.send, b"last")
        portal.call(b.send_eof)
        assert list(stream) == [b"last"]
        with pytest.raises(EndOfStream):
            stream.receive()
        portal.call(a.aclose)
        portal.call(b.aclose)


# aiohttp


class Reader:
    """Stands in for aiohttp's StreamReader: readany() gives a chunk, b"" at the end."""

    def __init__(self, *chunks: bytes | Exception) -> None:
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        item = self.chunks.pop(0) if self.chunks else b""
        if isinstance(item, Exception):
            raise item
        return item


async def test_aiohttp_reader_as_a_stream():
    aiohttp = pytest.importorskip("aiohttp")
    from jumpstarter.streams.aiohttp import AiohttpStreamReaderStream

    async with AiohttpStreamReaderStream(reader=Reader(b"a", b"b")) as stream:
        assert await read_all(stream) == b"ab"
        with pytest.raises(anyio.BrokenResourceError):
            await stream.send(b"x")
    broken = AiohttpStreamReaderStream(reader=Reader(b"a", aiohttp.ClientPayloadError("cut")))
    assert await broken.receive() == b"a"
    with pytest.raises(anyio.BrokenResourceError):
        await broken.receive()


def test_modules_needing_the_upstream_extra_name_it():
    code = (
        "import sys\n"
        "sys.modules['aiohttp'] = sys.modules['rich'] = None\n"
        "import jumpstarter.streams.common, jumpstarter.streams.encoding, jumpstarter.streams.metadata\n"
        "import jumpstarter.streams.blocking\n"
        "for name in ('aiohttp', 'progress'):\n"
        "    try:\n"
        "        __import__('jumpstarter.streams.' + name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    extra = "comes with the upstream extra: pip install {0}, or install this runtime with the extra (its wheel or "
    extra += "clone as 'PATH[upstream]', see docs/install.md; not 'jumpstarter[upstream]' from the package index"
    aiohttp_error, rich_error = result.stdout.splitlines()
    assert aiohttp_error.startswith("jumpstarter.streams.aiohttp needs aiohttp")
    assert f"aiohttp {extra.format('aiohttp')}" in aiohttp_error, aiohttp_error
    assert (
        rich_error.startswith("jumpstarter.streams.progress needs rich")
        and f"rich {extra.format('rich')}" in rich_error
    )
