from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.abc import ObjectStream

from jumpstarter.driver import Driver, export, exportstream


@dataclass(kw_only=True)
class Power(Driver):
    """A power switch; remembers its state, and every change in ``history``."""

    on_at_start: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.state = self.on_at_start
        self.history: list[str] = []

    @classmethod
    def client(cls) -> str:
        return "jumpstarter_driver_demo.client.PowerClient"

    @export
    async def on(self) -> None:
        """Switch the board on."""
        self.state = True
        self.history.append("on")
        self.logger.info("power on")

    @export
    async def off(self) -> None:
        """Switch the board off."""
        self.state = False
        self.history.append("off")
        self.logger.info("power off")

    @export
    def read(self) -> bool:
        return self.state

    def reset(self) -> None:
        self.state = self.on_at_start
        super().reset()


@dataclass(kw_only=True)
class Board(Driver):
    """A simulated board: a console, a counter, and a power child configured in YAML."""

    name: str = "board"
    baudrate: int = 115200
    closed: bool = False

    @classmethod
    def client(cls) -> str:
        return "jumpstarter_driver_demo.client.BoardClient"

    @export
    def echo(self, value):
        """Return the value as it arrived."""
        return value

    @export
    def describe(self) -> dict:
        return {"name": self.name, "baudrate": self.baudrate}

    @export
    def add(self, a: int, b: int) -> int:
        return a + b

    @export
    async def wait(self, seconds: float) -> float:
        """Sleep without blocking the exporter; return the time slept."""
        await anyio.sleep(seconds)
        return seconds

    @export
    def block(self, seconds: float) -> float:
        """Sleep in a plain (thread-run) method; return the time slept."""
        time.sleep(seconds)
        return seconds

    @export
    def count(self, n: int) -> Iterator[int]:
        """Yield 0 .. n-1."""
        yield from range(int(n))  # int(): an upstream exporter hands every number over as a float

    @export
    async def ticks(self, n: int, interval: float = 0.0) -> AsyncIterator[int]:
        for i in range(int(n)):  # as in count()
            await anyio.sleep(interval)
            yield i

    @export
    def fail(self, kind: str, message: str) -> None:
        """Raise an exception of ``kind``: value, timeout, connection, notimplemented, os, other."""
        errors = {
            "value": ValueError,
            "timeout": TimeoutError,
            "connection": ConnectionError,
            "notimplemented": NotImplementedError,
            "os": OSError,
            "other": RuntimeError,
        }
        raise errors[kind](message)

    @export
    async def checksum(self, handle) -> dict:
        """The size and SHA-256 of an upload the client sent with resource_async()."""
        digest, size = hashlib.sha256(), 0
        async with self.resource(handle) as data:
            async for chunk in data:
                digest.update(chunk)
                size += len(chunk)
        return {"size": size, "sha256": digest.hexdigest()}

    def not_exported(self) -> str:
        return "only for the exporter"

    @exportstream
    @asynccontextmanager
    async def console(self) -> AsyncIterator[ObjectStream[bytes]]:
        """An echo console: what is sent comes back."""
        send, receive = anyio.create_memory_object_stream[bytes](16)
        async with send, receive:
            yield _Echo(send, receive)

    def close(self) -> None:
        self.closed = True
        super().close()


class _Echo(ObjectStream[bytes]):
    def __init__(self, send, receive) -> None:
        self._send, self._receive = send, receive

    async def send(self, item: bytes) -> None:
        await self._send.send(item)

    async def receive(self) -> bytes:
        return await self._receive.receive()

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()
