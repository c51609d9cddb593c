"""Shared fixtures: the demo board served in-process, and ``jumpstarter run`` in a subprocess."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jumpstarter.exporter.process import ExporterProcess

pytest_plugins = ["pytester"]

# The end-to-end tests: whole pytest runs (pytester), exporters in subprocesses, other virtualenvs. Marked
# ``e2e`` so that `pytest -m "not e2e"` is a quick loop while working on the runtime's own code.
E2E_FIXTURES = {"pytester", "exporter_process", "drivers_python", "upstream_python", "testdir"}
E2E_MODULES = {
    *("test_upstream.py", "test_upstream_drivers.py", "test_upstream_drivers_product.py", "test_packaging.py"),
    *("test_readme.py", "test_memory.py", "test_exporter_lifetime.py", "test_parallel.py"),
    *("test_upstream_configs.py", "test_install_outside.py"),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: an end-to-end test (whole runs, subprocesses); -m 'not e2e' skips them")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in E2E_MODULES or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def say(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Write a line to the terminal now, past pytest's capture: progress of a long set-up inside a test. An xdist
    worker's standard error is the terminal of the run."""
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    worker = hasattr(pytestconfig, "workerinput")

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if reporter is not None and not worker:
                reporter.write_line(line)
            else:
                print(line, file=sys.stderr, flush=True)

    return write


@pytest.fixture
def board():
    """A demo Board with a Power child, as board.yaml describes it."""
    from jumpstarter_driver_demo import Board, Power

    return Board(name="demo-1", baudrate=9600, children={"power": Power()})


@pytest.fixture
def board_client(board):
    from jumpstarter.inprocess import serve

    with serve(board) as client:
        yield client


@pytest.fixture
def exporter_process() -> Iterator[Callable[..., ExporterProcess]]:
    """Factory of ``jumpstarter run`` subprocesses (ready to serve), all stopped at teardown."""
    started: list[ExporterProcess] = []

    def start(config: Path | str, *args: str, **kwargs) -> ExporterProcess:
        exporter = ExporterProcess.start(config, *args, **kwargs)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        if exporter.alive:
            exporter.kill()
        exporter.stop()


@pytest.fixture
def write(tmp_path) -> Callable[[str, str], Path]:
    """Write dedented text to a file under tmp_path; return its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM): the certificate is also the CA to trust."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    try:
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"can't make a test certificate with openssl: {exc} {getattr(exc, 'stderr', '')}", pytrace=False)
    return cert, key
