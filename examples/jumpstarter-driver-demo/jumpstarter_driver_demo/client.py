from __future__ import annotations

from collections.abc import Iterator

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
