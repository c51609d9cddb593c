"""An exporter that was slow to answer is not an exporter that died (issue 27, item 8).

A keepalive ping left unanswered (a frozen peer, or one starved of CPU on a loaded CI runner) breaks the
connection, and the call in flight fails within seconds, as it must; but the exporter is still there, and the
run's next tests must get it again instead of failing with "no exporter left".
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from samples import EXAMPLES

BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"
BURNERS = 3  # busy processes beside the run: the CPU starved, as on the CI runner at load 15-20

FROZEN_MID_STREAM = """
import os, signal, time

import pytest
from jumpstarter.errors import JumpstarterError

PID = int(os.environ["FROZEN_EXPORTER_PID"])
FROZEN_FOR = 15  # seconds: past a ping interval (10 s) and its timeout (3 s)


def test_0_frozen_mid_stream(board):
    with board.stream("console") as console:
        console.send(b"hi")
        assert console.receive() == b"hi"
        os.kill(PID, signal.SIGSTOP)  # frozen longer than a ping may go unanswered
        try:
            with pytest.raises(JumpstarterError, match="stopped answering"):
                console.receive()  # fails within seconds, as for any call in flight to a frozen exporter
            time.sleep(FROZEN_FOR)  # every connection to it pings meanwhile: its lease session's too
        finally:
            os.kill(PID, signal.SIGCONT)

"""


@pytest.fixture
def cpu_burners() -> Iterator[None]:
    """A few processes that spin for the whole test (killed at its end): the run competes for the CPU."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BURNERS)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


@pytest.mark.parametrize("listen", ["tcp", "unix"])
def test_an_exporter_frozen_past_a_ping_serves_the_next_tests(
    pytester, exporter_process, monkeypatch, tmp_path, cpu_burners, listen
):
    address = "127.0.0.1:0" if listen == "tcp" else f"unix://{tmp_path / 'frozen.sock'}"
    exporter = exporter_process(BOARD_YAML, "--listen", address)
    monkeypatch.setenv("FROZEN_EXPORTER_PID", str(exporter.process.pid))
    later = "".join(f"\ndef test_{i}(board):\n    assert board.add({i}, 1) == {i + 1}\n" for i in range(1, 4))
    pytester.makepyfile(test_frozen=FROZEN_MID_STREAM + later)
    try:
        result = pytester.runpytest_subprocess("--exporter", exporter.address, "-p", "no:cacheprovider", timeout=240)
    finally:
        exporter.process.send_signal(signal.SIGCONT)
    log = "".join(exporter.lines[-30:])
    outcomes = result.parseoutcomes()
    assert [outcomes.get(k, 0) for k in ("passed", "failed", "errors")] == [4, 0, 0], f"the exporter's log:\n{log}"
    assert exporter.alive, f"the exporter's log:\n{log}"


FROZEN_FOR_GOOD = """
import os, signal

import pytest
from jumpstarter.errors import JumpstarterError

import pytest_jumpstarter.exporters

pytest_jumpstarter.exporters.GRACE = 3.0  # seconds: the test needn't wait a minute


def test_0_frozen(board):
    assert board.add(1, 2) == 3
    os.kill(int(os.environ["FROZEN_EXPORTER_PID"]), signal.SIGSTOP)  # and never thawed during the run
    with pytest.raises(JumpstarterError, match="stopped answering"):
        board.add(1, 2)


def test_1(board):
    pass


def test_2(board):
    pass
"""


def test_an_exporter_that_stays_frozen_is_gone_after_its_grace(pytester, exporter_process, monkeypatch):
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0")
    monkeypatch.setenv("FROZEN_EXPORTER_PID", str(exporter.process.pid))
    pytester.makepyfile(test_frozen=FROZEN_FOR_GOOD)
    try:
        result = pytester.runpytest_subprocess("--exporter", exporter.address, "-p", "no:cacheprovider", timeout=240)
    finally:
        exporter.process.send_signal(signal.SIGCONT)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_1*",
            "jumpstarter: no exporter left for export 'board': exporter demo can't be reached: it has not answered "
            "for * s: *",
        ]
    )
