"""The board of the hook tests (tests/test_hooks.py): a power switch whose state is a file, driven from a hook's
shell with ``j power on|off|read``; closing the driver writes "closed" to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from jumpstarter.client import DriverClient
from jumpstarter.driver import Driver, export


@dataclass(kw_only=True)
class Power(Driver):
    state: str  # the file that holds "on" or "off"

    @classmethod
    def client(cls) -> str:
        return "hookboard.PowerClient"

    @export
    def on(self) -> None:
        Path(self.state).write_text("on")

    @export
    def off(self) -> None:
        Path(self.state).write_text("off")

    @export
    def read(self) -> str:
        path = Path(self.state)
        return path.read_text() if path.exists() else "unknown"

    def close(self) -> None:
        Path(self.state).write_text("closed")
        super().close()


class PowerClient(DriverClient):
    def on(self) -> None:
        self.call("on")

    def off(self) -> None:
        self.call("off")

    def read(self) -> str:
        return self.call("read")

    def cli(self) -> click.Group:
        @click.group()
        def power() -> None:
            """The board's power."""

        @power.command()
        def on() -> None:
            self.on()

        @power.command()
        def off() -> None:
            self.off()

        @power.command()
        def read() -> None:
            click.echo(self.read())

        return power
