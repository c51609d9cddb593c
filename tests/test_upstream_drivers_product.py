"""Upstream's driver packages through our product, not only through their own tests.

In the drivers' virtualenv (our jumpstarter plus upstream's driver packages from PyPI, made by
scripts/setup-upstream-drivers.sh): an ExporterConfig naming upstream driver classes, served by
`jumpstarter run` under our pytest plugin, a fixture per export, two xdist workers taking turns on
the exporter, and an upstream-style ``JumpstarterTest`` class in the same suite.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from upstream_peer import run_showing_progress

from jumpstarter.exporter.process import ExporterProcess

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup-upstream-drivers.sh"

LAB = """\
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
endpoint: ""
token: ""
export:
  power:
    type: jumpstarter_driver_power.driver.MockPower
  serial:
    type: jumpstarter_driver_pyserial.driver.PySerial
    config: {url: "loop://"}
  shell:
    type: jumpstarter_driver_shell.driver.Shell
    config:
      methods:
        greet: "echo hello $1"
"""

TESTS = """
import time

from jumpstarter_testing import JumpstarterTest


def test_power(power):
    power.on()
    power.off()
    assert [(r.voltage, r.current) for r in power.read()] == [(0.0, 0.0), (5.0, 2.0)]


def test_serial_stream(serial):
    with serial.stream() as port:  # loop:// echoes what is written
        port.send(b"ping")
        received = b""
        while len(received) < 4:
            received += port.receive()
    assert received == b"ping"


def test_serial_pexpect(serial):
    with serial.pexpect() as console:
        console.sendline("login: root")
        console.expect("login: root", timeout=5)


def test_shell(shell, capfd):
    assert shell.greet("world") == 0
    assert "hello world" in capfd.readouterr().out


class TestUpstreamStyle(JumpstarterTest):
    def test_client(self, client):
        client.power.on()
        assert sorted(client.children) == ["power", "serial", "shell"]
"""


@pytest.fixture(scope="module")
def drivers_python(say) -> Path:
    """The python of the drivers' virtualenv, made (or reused) by the project's own script, saying what it does."""
    done = run_showing_progress(["bash", SETUP], say, 1200, cwd=ROOT)
    if done.returncode != 0:
        pytest.fail(f"{SETUP.name} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return ROOT / ".venv-drivers" / "bin" / "python"


def test_upstream_drivers_under_our_plugin_and_xdist(drivers_python: Path, tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(LAB)
    (tmp_path / "test_lab.py").write_text(textwrap.dedent(TESTS))
    done = subprocess.run(
        [drivers_python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--exporter", "lab.yaml", "-n", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "5 passed" in output, output


def test_j_drives_upstream_drivers_inside_our_shell(drivers_python: Path, tmp_path: Path) -> None:
    """`jumpstarter shell ADDRESS -- j power on`, as upstream's `jmp shell -- j power on`: the drivers' click
    commands, gathered under their export names."""
    (tmp_path / "lab.yaml").write_text(LAB)
    bin_dir = drivers_python.parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    lab = tmp_path / "lab.yaml"
    with ExporterProcess.start(lab, "--listen", "127.0.0.1:0", env=env, python=drivers_python) as exporter:
        shell = [str(drivers_python), "-m", "jumpstarter", "shell", exporter.address, "--"]

        def j(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*shell, "j", *args], capture_output=True, text=True, timeout=60, env=env)

        listing = j("--help")
        assert listing.returncode == 0, listing.stderr
        assert "power" in listing.stdout and "serial" in listing.stdout, listing.stdout
        assert j("power", "on").returncode == 0
        read = j("power", "read")
        assert read.returncode == 0 and "5.0" in read.stdout, read.stdout + read.stderr  # MockPower's reading
        wrong = j("power", "of")
        assert wrong.returncode == 2 and "No such command 'of'" in wrong.stderr, wrong.stderr
    outside = subprocess.run([str(bin_dir / "j"), "power", "on"], capture_output=True, text=True, timeout=60)
    assert outside.returncode == 2 and "inside `jumpstarter shell ADDRESS -- j ...`" in outside.stderr
