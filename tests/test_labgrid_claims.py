# ruff: noqa: F811
"""Claims through a labgrid lab: waiting for a place that doesn't exist yet, a place of several exporters,
retrying elsewhere, matrix mode. A real labgrid-coordinator on loopback, exporters of ours publishing to it,
whole pytest runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from samples import UNIT_DRIVER, exporter_yaml, unit_yaml

pytest.importorskip("labgrid", reason="labgrid is in the dev extra: run scripts/setup.sh")

# The lab's fixtures (boards, coordinator, publish) come from labgrid_lab: test arguments of those names are theirs.
from labgrid_lab import BOARD, boards, coordinator, directory, publish, until  # noqa: E402, F401

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


def test_a_place_of_two_exporters_is_one_board(pytester, publish, coordinator, tmp_path):
    """A board whose power and serial console are served by two exporters: both publish into place b7."""
    parts = [
        exporter_yaml(
            tmp_path / f"b7-{part}.yaml",
            {part: BOARD},
            name=f"b7-{part}",
            labels={"board": "rpi4"},
            config=f"name: b7-{part}",
        )
        for part in ("power", "serial")
    ]
    publish(parts, ["b7-power", "b7-serial"], "--labgrid-place", "b7")
    with directory(coordinator) as session:
        assert sorted(session.places) == ["b7"]  # no place of each part's own
        assert session.places["b7"].tags == {"board": "rpi4"}
        assert len(session.resources_of(session.places["b7"], "JumpstarterExporter")) == 2
    started, done = pytester.path / "started", pytester.path / "done"
    pytester.makepyfile(
        test_board=f"""
        import os, time
        import pytest

        @pytest.mark.exporter(board="rpi4")
        def test_both(power, serial):
            assert power.call("describe")["name"] == "b7-power"
            assert serial.call("describe")["name"] == "b7-serial"

        @pytest.mark.exporter(board="rpi4")
        def test_power_alone(power):
            open({str(started)!r}, "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists({str(done)!r}) and time.monotonic() < deadline:
                time.sleep(0.05)
        """
    )
    run, log = pytest_run(pytester, "--lab", coordinator.url, "-rA")
    until(lambda: started.exists() or run.poll() is not None, "test_power_alone to start")
    listing = subprocess.run(
        [sys.executable, "-m", "jumpstarter", "lab", coordinator.url], capture_output=True, text=True, timeout=60
    )
    done.touch()
    output = finished(run, log)
    assert run.returncode == 0, output
    shown = listing.stdout.splitlines()
    assert shown[0].startswith("b7  [board=rpi4]  held by "), listing
    # A test that uses the power alone holds the whole board: the serial console's exporter too.
    assert re.fullmatch(r"    exporter b7-power: 127\.0\.0\.1:\d+: leased by .*::test_power_alone since .*", shown[1])
    assert re.fullmatch(r"    exporter b7-serial: 127\.0\.0\.1:\d+: leased by .*::test_power_alone since .*", shown[2])


def test_two_exporters_of_a_place_with_one_export_name_is_a_clear_error(
    pytester, boards, publish, tmp_path, coordinator
):
    boards(1)  # kind=demo
    twins = [
        exporter_yaml(tmp_path / f"twin-{n}.yaml", {"board": BOARD}, name=f"twin-{n}", labels={"kind": "twin"})
        for n in ("a", "b")
    ]
    publish(twins, ["twin-a", "twin-b"], "--labgrid-place", "twin")
    pytester.makepyfile(test_lab="import pytest\n@pytest.mark.exporter(kind='twin')\ndef test_it(board):\n    pass\n")
    result = pytester.runpytest_subprocess("--lab", coordinator.url, "--lease-timeout", "60")
    result.assert_outcomes(errors=1)  # fails fast: no waiting out the lease timeout
    result.stdout.fnmatch_lines(
        [
            "*no place left for export 'board' with kind=twin: place 'twin': its exporters twin-a and twin-b both "
            "have export 'board'*"
        ]
    )


def test_a_test_that_failed_on_a_sick_place_is_retried_on_another(pytester, publish, coordinator):
    pytester.makepyfile(unit=UNIT_DRIVER)
    units = [unit_yaml(pytester.path, "sick", {"kind": "unit"}, sick=True), unit_yaml(pytester.path, "good")]
    publish(units, ["sick", "good"], env={"PYTHONPATH": str(pytester.path)})
    pytester.makepyfile(test_work="def test_work(unit):\n    assert unit.call('work')\n")
    with directory(coordinator) as session:
        session.acquire("good")  # busy at first, so that the coordinator gives the run's first try the sick one
        run, log = pytest_run(pytester, "--lab", coordinator.url, "--jumpstarter-retry-elsewhere", "1", "-rA")
        until(lambda: session.places["sick"].acquired or run.poll() is not None, "the first try on sick")
        session.release("good")
    output = finished(run, log)
    assert run.returncode == 0, output
    # Tried on sick (failed), again elsewhere (passed on good), and once more on sick (a check-back: failed).
    assert "test_work.py::test_work: failed on sick, passed on good: the board" in output
    assert "sick: 1 test(s) failed there and passed on another board:" in output


def test_matrix_mode_runs_each_test_on_every_fitting_place(pytester, boards, coordinator):
    boards(2)  # b0, b1: kind=demo
    boards(1, labels={"kind": "other"}, first=2)  # b2: left out by --lab-tag kind=demo
    with directory(coordinator) as session:
        session.set_tags("b0", {"rack": "r1"})  # the admin's tag, which b0's exporter's labels don't have
    pytester.makepyfile(
        test_matrix="""
        import pytest

        def ran_on(board, request):
            assert board.call("describe")["name"] == request.node.callspec.params["jumpstarter_target"]

        def test_any(board, request):
            ran_on(board, request)

        @pytest.mark.exporter(rack="r1")
        def test_rack(board, request):
            ran_on(board, request)
        """
    )
    run, log = pytest_run(
        pytester,
        "-n",
        "2",
        "--lab",
        coordinator.url,
        "--lab-tag",
        "kind=demo",
        "--exporter-matrix",
        "--lease-timeout",
        "20",
        "-rA",
    )
    output = finished(run, log)
    assert run.returncode == 0, output
    passed = sorted(line.split()[1] for line in output.splitlines() if line.startswith("PASSED "))
    assert passed == [
        "test_matrix.py::test_any[b0]",
        "test_matrix.py::test_any[b1]",
        "test_matrix.py::test_rack[b0]",
    ], output
