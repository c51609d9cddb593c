"""An exporter the plugin started ends with its pytest, however pytest ends (issue 13, item 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from samples import exporter_yaml

DRIVER = """
import os
from jumpstarter.driver import Driver, export


class Pid(Driver):
    @classmethod
    def client(cls):
        return "jumpstarter.client.DriverClient"

    @export
    def pid(self):
        return os.getpid()

    def close(self):
        with open(os.environ["CLOSED_FILE"], "w") as out:
            out.write("closed")
        super().close()
"""

TEST = """
import os, pathlib, time


def test_holds_the_board(pid):
    pathlib.Path(os.environ["PID_FILE"]).write_text(str(pid.call("pid")))
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_exporter_stops_when_pytest_is_killed(tmp_path, how):
    (tmp_path / "pid_driver.py").write_text(DRIVER)
    (tmp_path / "test_hold.py").write_text(TEST)
    config = exporter_yaml(tmp_path / "pid.yaml", {"pid": "pid_driver.Pid"})
    pid_file, closed_file = tmp_path / "exporter.pid", tmp_path / "closed"
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "PID_FILE": str(pid_file),
        "CLOSED_FILE": str(closed_file),
        "JUMPSTARTER_ALLOW_CLIENT_MODULES": "pid_driver",
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--exporter", str(config), "test_hold.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _wait(lambda: pid_file.exists() and pid_file.read_text(), 60), "the test never ran"
        exporter = int(pid_file.read_text())
        assert exporter != run.pid and _alive(exporter)
        run.send_signal(how)
        output, _ = run.communicate(timeout=30)
        assert _wait(lambda: not _alive(exporter), 10), f"exporter {exporter} still serves after pytest's {how.name}"
        assert closed_file.read_text() == "closed"  # it stopped cleanly: the driver's close() ran
        if how == signal.SIGTERM:  # the run ended as on Ctrl-C, saying why
            assert "KeyboardInterrupt: jumpstarter: SIGTERM: the run stops as on Ctrl-C" in output, output
            assert run.returncode == pytest.ExitCode.INTERRUPTED
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
