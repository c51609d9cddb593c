"""Shared fixtures: the demo board served in-process, and ``jumpstarter run`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent
EXAMPLES = ROOT / "examples"
READY = "jumpstarter: serving"
# The YAML of ../shared/seed/custom-driver.md, verbatim: its type names a module that doesn't exist.
SEED_YAML = """\
# /etc/jumpstarter/exporters/custom.yaml
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
endpoint: ""
token: ""
export:
    custom:
        # full import path of the driver class
        type: jumpstarter_driver_custom.CustomDriver
"""


@pytest.fixture
def board():
    """A demo Board with a Power child, as board.yaml describes it."""
    from jumpstarter_driver_demo import Board, Power

    return Board(name="demo-1", baudrate=9600, children={"power": Power()})


@pytest.fixture
def board_client(board):
    from jumpstarter.common.utils import serve

    with serve(board) as client:
        yield client


class Exporter:
    """A ``jumpstarter run`` subprocess; ``address`` is where it serves once ready."""

    def __init__(self, process: subprocess.Popen, address: str, lines: list[str]) -> None:
        self.process, self.address, self.lines = process, address, lines

    def stop(self, timeout: float = 10) -> tuple[int, str]:
        """SIGTERM, wait, and return (exit code, everything it wrote)."""
        if self.process.poll() is None:
            self.process.terminate()
        out, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, "".join(self.lines) + out


def start_exporter(config: Path | str, *args: str, env: dict | None = None, timeout: float = 20) -> Exporter:
    """Start ``python -m jumpstarter run CONFIG ARGS``; wait for its ready line (or its early exit)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "jumpstarter", "run", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break  # exited before serving
        lines.append(line)
        if line.startswith(READY):
            return Exporter(process, line.rsplit(" at ", 1)[1].strip(), lines)
    process.kill()
    out, _ = process.communicate()
    raise AssertionError(f"exporter did not start: {''.join(lines) + out}")


@pytest.fixture
def exporter_process() -> Iterator[Callable[..., Exporter]]:
    """Factory of ``jumpstarter run`` subprocesses, all stopped at teardown."""
    started: list[Exporter] = []

    def start(config: Path | str, *args: str, **kwargs) -> Exporter:
        exporter = start_exporter(config, *args, **kwargs)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        if exporter.process.poll() is None:
            exporter.process.kill()
        exporter.process.wait()
        exporter.process.stdout.close()


@pytest.fixture
def write(tmp_path) -> Callable[[str, str], Path]:
    """Write dedented text to a file under tmp_path; return its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write
