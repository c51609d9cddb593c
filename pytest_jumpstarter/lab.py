"""The exporters of a test session: YAML ones the plugin starts, running ones reached by address."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from jumpstarter.client import DriverClient, connect
from jumpstarter.config import ExporterConfig


class Exporter:
    """One exporter of the session; ``client()`` connects (and starts it) on first use."""

    def __init__(self, spec: str, passphrase: str | None) -> None:
        self.spec, self.passphrase = spec, passphrase
        self.exports: list[str] = []
        self._root: DriverClient | None = None
        self._stack = ExitStack()
        self.observers: list[Any] = []

    def describe(self) -> str:
        return self.spec

    def client(self) -> DriverClient:
        if self._root is None:
            self._root = self._stack.enter_context(self._open())
            self._root.connection.observers = self.observers  # shared: observers added later see every call
        return self._root

    def _open(self):
        return connect(self.spec, passphrase=self.passphrase)

    def failure(self) -> str | None:
        """Why this exporter can't be used any more (it died), or None."""
        return None

    def output(self, since: int = 0) -> str:
        return ""

    @property
    def log_position(self) -> int:
        return 0

    def close(self) -> None:
        self._root = None
        self._stack.close()


class AddressExporter(Exporter):
    """An exporter that already runs; its exports are read from it at start-up."""

    def __init__(self, spec: str, passphrase: str | None) -> None:
        super().__init__(spec, passphrase)
        self.exports = list(self.client().children)


class YamlExporter(Exporter):
    """An exporter the plugin starts from an ExporterConfig, in a child process or in-process."""

    def __init__(self, spec: str, passphrase: str | None, mode: str, start_timeout: float) -> None:
        super().__init__(spec, passphrase)
        self.config = ExporterConfig.load(spec)  # ConfigError now, at start-up, not once per test
        self.config.check()
        self.exports = list(self.config.export)
        self.mode, self.start_timeout = mode, start_timeout
        self.process = None

    def describe(self) -> str:
        return f"{self.spec} ({self.mode})"

    def _open(self):
        if self.mode == "inprocess":
            from jumpstarter.common.utils import serve

            return serve(self.config.instantiate(), passphrase=self.passphrase)
        from jumpstarter.exporter.process import ExporterProcess

        folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="jumpstarter-pytest-")))
        args = ["--listen", f"unix://{folder / 'exporter.sock'}"]
        env = {"JUMPSTARTER_PASSPHRASE": self.passphrase} if self.passphrase else {}
        self.process = ExporterProcess.start(self.spec, *args, env=env, timeout=self.start_timeout)
        self._stack.callback(self.process.stop)
        return connect(self.process.address, passphrase=self.passphrase)

    def failure(self) -> str | None:
        if self.process is not None and not self.process.alive:
            tail = "".join(self.process.lines[-20:]).rstrip()
            return f"exporter {self.spec} died (exit code {self.process.returncode}); its last output:\n{tail}"
        return None

    def output(self, since: int = 0) -> str:
        return self.process.output(since) if self.process else ""

    @property
    def log_position(self) -> int:
        return len(self.process.lines) if self.process else 0


def is_yaml(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) or Path(spec).is_file()
