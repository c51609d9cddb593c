"""A labgrid lab for tests: a real labgrid-coordinator on loopback, and exporters of ours publishing to it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from samples import exporter_yaml

from jumpstarter.labgrid.coordinator import Session

BOARD = "jumpstarter_driver_demo.Board"
COORDINATOR = Path(sys.executable).with_name("labgrid-coordinator")


class Coordinator:
    """labgrid-coordinator in ``folder`` (its places.yaml stays there across restarts)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.address = folder, "127.0.0.1:0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Coordinator:
        log = self.folder / "coordinator.log"
        with log.open("w") as output:  # a file, not a pipe: it prints every acquire, and nobody need read it
            self.process = subprocess.Popen(
                [str(COORDINATOR), "-l", self.address], cwd=self.folder, stdout=output, stderr=subprocess.STDOUT
            )
        process = self.process

        def listening() -> str:
            assert process.poll() is None, f"labgrid-coordinator ended: {log.read_text()}"
            lines = [line for line in log.read_text().splitlines() if line.startswith("listening on ")]
            return lines[-1].split()[-1] if lines else ""

        self.address = str(until(listening, "labgrid-coordinator to listen"))
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def url(self) -> str:
        return f"labgrid://{self.address}"


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    started = Coordinator(tmp_path).start()
    yield started
    started.stop()


def until(condition: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"waited {timeout} s for {what}")


def directory(coordinator: Coordinator) -> Session:
    """A session of the lab's admin: places it acquires are held by a labgrid user who isn't one of ours (whose
    places a waiting claim of ours would take back once it saw their exporter free for a while)."""
    return Session(coordinator.address, name="lab-admin/tests")


@pytest.fixture
def publish(exporter_process, coordinator: Coordinator):
    """Start exporters of ours from ``configs`` (their ``metadata.name`` given as ``names``), publishing to the
    coordinator with ``args`` added, and wait until the coordinator has them all; returns the processes."""

    def start(configs: list[Path], names: list[str], *args: str, env: dict[str, str] | None = None) -> list:
        options = ["--listen", "127.0.0.1:0", "--labgrid", coordinator.url, *args]
        started = [exporter_process(c, *options, env=env) if env else exporter_process(c, *options) for c in configs]
        with directory(coordinator) as session:
            until(lambda: set(names) <= {r[0] for r in session.resources}, f"exporters {sorted(names)} published")
        return started

    return start


@pytest.fixture
def boards(publish, tmp_path: Path):
    """Publish ``n`` exporters of ours (b0, b1, ...) to the coordinator, each at a place of its name; returns the
    processes."""

    def start(n: int, labels: dict[str, str] | None = None, first: int = 0, passphrase: str = "") -> list:
        names = [f"b{i}" for i in range(first, first + n)]
        configs = [
            exporter_yaml(
                tmp_path / f"{name}.yaml",
                {"board": BOARD},
                name=name,
                labels=labels or {"kind": "demo"},
                config=f"name: {name}",
            )
            for name in names
        ]
        env = {**os.environ, "JUMPSTARTER_PASSPHRASE": passphrase} if passphrase else None
        return publish(configs, names, env=env)

    return start


def holding_tests(count: int, seconds: float) -> str:
    body = f"    assert board.wait({seconds}) == {seconds}\n    print('ON', board.call('describe')['name'])\n\n"
    return "".join(f"def test_{i}(board):\n{body}" for i in range(count))
