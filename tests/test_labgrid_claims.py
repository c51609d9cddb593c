# ruff: noqa: F811
"""Claims through a labgrid lab: waiting for a place that doesn't exist yet, a place of several exporters,
retrying elsewhere, matrix mode. A real labgrid-coordinator on loopback, exporters of ours publishing to it,
whole pytest runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("labgrid", reason="labgrid is in the dev extra: run scripts/setup.sh")

# The lab's fixtures (boards, coordinator, publish) come from labgrid_lab: test arguments of those names are theirs.
from labgrid_lab import boards, coordinator, directory, publish, until  # noqa: E402, F401

pytestmark = pytest.mark.e2e

ON_NEW = """
import pytest

@pytest.mark.exporter(kind="new")
def test_{name}(board):
    print("ON", board.call("describe")["name"])
"""


def pytest_run(pytester: pytest.Pytester, *args: str) -> tuple[subprocess.Popen, Path]:
    """A pytest run in the background, its output (both streams) going to a file that can be read meanwhile."""
    log = pytester.path / "run.log"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    with log.open("w") as output:
        run = subprocess.Popen(command, cwd=pytester.path, stdout=output, stderr=subprocess.STDOUT)
    return run, log


def finished(run: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    try:
        run.wait(timeout)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    return log.read_text()


def test_a_run_waits_for_a_place_made_while_it_waits(pytester, boards, coordinator):
    boards(1)  # b0, kind=demo: no place carries kind=new yet
    pytester.makepyfile(test_lab=ON_NEW.format(name="new"))
    run, log = pytest_run(pytester, "--lab", coordinator.url, "--lease-timeout", "120", "-rA", "-s")
    waiting = f"jumpstarter: no place of the labgrid lab at {coordinator.address} carries kind=new yet"
    until(lambda: waiting in log.read_text() or run.poll() is not None, "the run to say it waits")
    boards(1, labels={"kind": "new"}, first=1)  # the admin's new board, published: its place carries kind=new
    output = finished(run, log)
    assert run.returncode == 0, output
    assert "ON b1" in output
    (line,) = [line for line in output.splitlines() if waiting in line]  # said once
    assert "(places: b0 (kind=demo)): waiting for one, up to 120 s (--lease-timeout)" in line


def test_a_place_that_never_comes_fails_naming_the_tags(pytester, boards, coordinator):
    boards(1)
    pytester.makepyfile(test_first=ON_NEW.format(name="first"), test_second=ON_NEW.format(name="second"))
    run, log = pytest_run(pytester, "--lab", coordinator.url, "--lease-timeout", "3", "-rA")
    output = finished(run, log)
    assert run.returncode == 1, output
    assert output.count("ERROR at setup") == 2, output
    no_place = f"no place of the labgrid lab at {coordinator.address} carries kind=new (places: b0 (kind=demo))"
    assert f"jumpstarter: waited 3 s for export 'board' with kind=new: {no_place}" in output
    # The second test doesn't wait it out again: the first one did, and nothing changed since.
    assert f"jumpstarter: {no_place}; an earlier test waited 3 s for one" in output
