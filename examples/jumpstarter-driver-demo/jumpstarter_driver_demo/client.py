from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

from anyio import EndOfStream
from anyio.abc import ObjectStream

from jumpstarter.client import DriverClient


class PowerClient(DriverClient):
    def on(self) -> None:
        self.call("on")

    def off(self) -> None:
        self.call("off")

    def read(self) -> bool:
        return self.call("read")

    def cycle(self) -> None:
        self.off()
        self.on()


class BoardClient(DriverClient):
    def echo(self, value):
        return self.call("echo", value)

    def describe(self) -> dict:
        return self.call("describe")

    @cached_property
    def settings(self) -> dict:
        """The board's settings, asked of the driver once per client object: a client that caches what it asked
        for itself, as upstream's ShellClient caches its driver's methods."""
        return self.describe()

    def add(self, a: int, b: int) -> int:
        return self.call("add", a, b)

    def wait(self, seconds: float) -> float:
        return self.call("wait", seconds)

    def count(self, n: int) -> Iterator[int]:
        return self.streamingcall("count", n)

    def ticks(self, n: int, interval: float = 0.0) -> Iterator[int]:
        return self.streamingcall("ticks", n, interval)

    def fail(self, kind: str, message: str) -> None:
        self.call("fail", kind, message)

    async def echo_async(self, value):
        return await self.call_async("echo", value)

    def checksum(self, data: bytes) -> dict:
        """Upload ``data`` and get its size and SHA-256 back (works with upstream's client too)."""
        with self.portal.wrap_async_context_manager(self.resource_async(Chunks(data))) as handle:
            return self.call("checksum", handle)


class Chunks(ObjectStream[bytes]):
    """``data`` as a stream of 64 KiB chunks, the source of an upload."""

    def __init__(self, data: bytes, size: int = 64 * 1024) -> None:
        self._chunks = [data[i : i + size] for i in range(0, len(data), size)]

    async def receive(self) -> bytes:
        if not self._chunks:
            raise EndOfStream
        return self._chunks.pop(0)

    async def send(self, item: bytes) -> None:
        pass  # nothing comes back on an upload

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        self._chunks.clear()
