"""Upstream's driver packages through our product, not only through their own tests.

In the drivers' virtualenv (our jumpstarter plus upstream's driver packages from PyPI, made by
scripts/setup-upstream-drivers.sh): an ExporterConfig naming upstream driver classes, served by
`jumpstarter run` under our pytest plugin, a fixture per export, two xdist workers taking turns on
the exporter, and an upstream-style ``JumpstarterTest`` class in the same suite; the same tests, and a
login on a serial console whose other end runs a real shell, recorded and then replayed unchanged.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import tty
from collections.abc import Iterator
from contextlib import contextmanager
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


# A board's serial console, as the README's serial example has it: a shell behind a login-like prompt. Like a
# getty, it waits for Enter before it asks (the driver's port is opened, and flushed, after the shell starts).
LOGIN = 'read _; printf "login: "; read user; echo "Welcome, $user"; PS1="$user@dut:~# " exec sh -i +m'

CONSOLE = """\
  console:
    type: jumpstarter_driver_pyserial.driver.PySerial
    config: {{url: "{tty}"}}
"""

LOGIN_TEST = """

def test_login(console):
    with console.pexpect() as shell:
        shell.sendline("")
        shell.expect("login: ", timeout=30)
        shell.sendline("root")
        shell.expect("root@dut:~# ", timeout=30)
        shell.sendline("echo $((6 * 7))")
        shell.expect("42", timeout=30)
"""

# One call per driver changed, and what replay must say of it (a regular expression; the file follows).
BREAKS = {
    "power.on()\n    power.off()": (
        "power.off()\n    power.on()",
        r"step 1 differs: expected power\.on\(\), got power\.off\(\)",
    ),
    'port.send(b"ping")': ('port.send(b"pong")', r"serial\.connect: .*expected to send b'ping', got b'pong'"),
    'sendline("login: root")': (
        'sendline("login: rooT")',
        r"serial\.connect: .*expected to send b'login: root.*got b'login: rooT",
    ),
    'greet("world")': (
        'greet("earth")',
        r"expected shell\.call_method\('greet', \{\}, 'world'\).*got shell\.call_method\('greet', \{\}, 'earth'\)",
    ),
    "client.power.on()": ("client.power.off()", r"step 1 differs: expected power\.on\(\), got power\.off\(\)"),
    'sendline("root")': ('sendline("admin")', r"console\.connect: .*expected to send b'root.*got b'admin"),
}


@contextmanager
def login_console() -> Iterator[str]:
    """A pty whose other end runs LOGIN; yields the path a PySerial driver opens."""
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line editing: the shell reads what the driver sends, as a board's would
    shell = subprocess.Popen(["sh", "-c", LOGIN], stdin=master, stdout=master, stderr=master, start_new_session=True)
    try:
        yield os.ttyname(slave)
    finally:
        shell.kill()
        shell.wait()
        os.close(master)
        os.close(slave)


def test_upstream_drivers_record_and_replay_unchanged(drivers_python: Path, tmp_path: Path) -> None:
    """Every test above, and a pexpect login, recorded on the exporter and replayed without one, each way with
    and without xdist: all replay green; a call changed per driver fails naming expected, got and the file."""
    tests = textwrap.dedent(TESTS).replace('["power", "serial", "shell"]', '["console", "power", "serial", "shell"]')
    (tmp_path / "test_lab.py").write_text(tests + LOGIN_TEST)

    def pytest(*args: str) -> tuple[int, str]:
        done = subprocess.run(
            [drivers_python, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return done.returncode, done.stdout + done.stderr

    for record, replay in ((["rec"], ["-n", "2"]), (["rec2", "-n", "2"], [])):
        with login_console() as console:  # a fresh shell, waiting for its login, for each recording
            (tmp_path / "lab.yaml").write_text(LAB + CONSOLE.format(tty=console))
            code, output = pytest("--exporter", "lab.yaml", "--jumpstarter-record", *record)
            assert code == 0 and "6 passed" in output, output
        code, output = pytest("--jumpstarter-replay", record[0], *replay)
        assert code == 0 and "6 passed" in output, output

    broken = tests + LOGIN_TEST
    for original, (changed, _) in BREAKS.items():
        assert broken.count(original) == 1, original
        broken = broken.replace(original, changed)
    (tmp_path / "test_lab.py").write_text(broken)
    code, output = pytest("--jumpstarter-replay", "rec")
    assert code == 1 and "6 failed" in output, output
    assert not re.search(r"^ERROR |\d+ errors?\b", output, re.MULTILINE), output  # each shows once, as a failure
    for _, said in BREAKS.values():
        assert re.search(said + r".*\(replaying test_lab\.py::\S+ from \S+/rec/test_lab\.yaml\)", output), (
            said,
            output,
        )
