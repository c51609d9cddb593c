"""An exporter config's hooks: (upstream's beforeLease / afterLease), run as the board changes holder.

Real exporters (``jumpstarter run``) serving tests/hooks/hookboard.py, whose hooks are shell scripts that call
``j power on`` and write a file; our client's leases, the pytest plugin (pytester, xdist) and upstream's
``jmp shell`` take the board.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc
import pytest
import upstream_peer as peer
import yaml

from jumpstarter.client.connection import Connection
from jumpstarter.client.lease import Busy, HookFailed, Lease, try_lease
from jumpstarter.common.wire import LEASE_KEY
from jumpstarter.config import ExporterConfig
from jumpstarter.config.hooks import HookSpec
from jumpstarter.errors import ConfigError
from jumpstarter.exporter import hooks as runner
from jumpstarter.exporter.process import ExporterProcess
from jumpstarter.v1 import common_pb2, jumpstarter_pb2, jumpstarter_pb2_grpc

HERE = Path(__file__).resolve().parent / "hooks"
ENV = {"PYTHONPATH": str(HERE), "JUMPSTARTER_CLIENT_MODULES": "hookboard"}
STATUS = common_pb2.ExporterStatus.Name


def config(folder: Path, hooks: dict[str, Any], name: str = "board.yaml") -> Path:
    doc = {
        "apiVersion": "jumpstarter.dev/v1alpha1",
        "kind": "ExporterConfig",
        "metadata": {"name": "hookboard"},
        "hooks": hooks,
        "export": {"power": {"type": "hookboard.Power", "config": {"state": str(folder / "state")}}},
    }
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start(exporter_process, path: Path) -> ExporterProcess:
    return exporter_process(path, "--listen", "127.0.0.1:0", env=ENV)


def take(connection: Connection, holder: str, timeout: float = 90) -> Lease:
    """Wait for the lease, as the plugin does (a hook running is a busy board)."""
    deadline = time.monotonic() + timeout
    while True:
        got = try_lease(connection, holder)
        if not isinstance(got, Busy):
            return got
        assert time.monotonic() < deadline, f"still busy after {timeout} s: {got}"
        time.sleep(0.05)


def status(address: str, lease: str = "an observer's") -> jumpstarter_pb2.GetStatusResponse:
    """GetStatus, asked with a lease (any): a client without one would have the lease-less clients' beforeLease
    run (see jumpstarter.exporter.holders)."""
    metadata = [(LEASE_KEY, lease)] if lease else []
    with grpc.insecure_channel(address) as channel:
        stub = jumpstarter_pb2_grpc.ExporterServiceStub(channel)
        return stub.GetStatus(jumpstarter_pb2.GetStatusRequest(), timeout=30, metadata=metadata)


def wait_for(condition, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# The config ---------------------------------------------------------------------------------------------------

HOOKED = """\
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
hooks:
  beforeLease:
    script: j power on
{extra}export:
  power:
    type: hookboard.Power
    config: {{state: /tmp/x}}
"""


def test_hooks_load_with_upstreams_defaults():
    text = HOOKED.format(extra="  afterLease:\n    script: ./tidy.py\n    exec: python3\n    onFailure: endLease\n")
    hooks = ExporterConfig.parse(text, "board.yaml").hooks
    assert hooks.before_lease == HookSpec("beforeLease", "j power on", None, 120.0, "warn", 4)
    assert hooks.after_lease == HookSpec("afterLease", "./tidy.py", "python3", 120.0, "endLease", 6)


def test_failure_detection_is_accepted_with_a_warning():
    config = ExporterConfig.parse(HOOKED.format(extra="failureDetection: {maxRapidFailures: 3}\n"), "b.yaml")
    assert any("failureDetection" in w and "restart loop" in w for w in config.warnings), config.warnings


@pytest.mark.parametrize(
    "extra, line, message",
    [
        ("    timeout: -5\n", 6, "hooks.beforeLease.timeout must be a number of seconds above 0"),
        ("    timeout: ten\n", 6, "not 'ten'"),
        ("    timeout: true\n", 6, "timeout must be a number"),
        ("    onFailure: explode\n", 6, "onFailure must be one of warn, endLease, exit, not 'explode'"),
        ("    onFailure: endlease\n", 6, "did you mean 'endLease'?"),
        ("    scrpit: x\n", 6, "hooks.beforeLease: unknown key 'scrpit'"),
        ("    exec: [sh]\n", 6, "exec must be an interpreter (a string), not a list"),
        ("  beforeLeese: {script: x}\n", 6, "hooks: unknown key 'beforeLeese'; did you mean 'beforeLease'?"),
        ("  afterLease: [a, b]\n", 6, "hooks.afterLease must be a mapping with 'script'"),
        ("  afterLease: {timeout: 3}\n", 6, "hooks.afterLease: missing 'script'"),
        ("  afterLease: {script: 42}\n", 6, "hooks.afterLease.script must be a non-empty string, not 42"),
    ],
)
def test_hostile_hooks_are_errors_with_file_and_line(extra, line, message):
    with pytest.raises(ConfigError) as info:
        ExporterConfig.parse(HOOKED.format(extra=extra), "board.yaml")
    assert str(info.value).startswith(f"board.yaml:{line}: "), info.value
    assert message in str(info.value), info.value


def test_hooks_that_are_not_a_mapping():
    with pytest.raises(ConfigError, match=r"^b.yaml:3: 'hooks' must be a mapping"):
        ExporterConfig.parse("apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\nhooks: run.sh\n", "b.yaml")


# The runner, alone ----------------------------------------------------------------------------------------------


def run(script: str, timeout: float = 60, **env: str) -> Any:
    spec = HookSpec("beforeLease", script, timeout=timeout)
    return asyncio.run(runner.run_hook(spec, {**os.environ, **env}, "tester"))


def test_a_flooding_hook_is_bounded_in_memory_and_log(caplog):
    caplog.set_level(logging.INFO)
    # 20 MB in 400,000 lines
    done = run(f"{sys.executable} -c \"import sys\nfor i in range(400000): sys.stdout.write('x' * 49 + chr(10))\"")
    assert done.failure == ""
    assert len(done.output) < runner.OUTPUT_KEEP + 100, len(done.output)
    assert done.output.startswith("[") and "bytes of output left out]" in done.output.splitlines()[0]
    logged = [r for r in caplog.records if r.msg == "%s hook: %s"]  # a line of its output each
    assert len(logged) <= runner.LOG_LINES, len(logged)
    assert any("left out" in r.getMessage() for r in caplog.records)


def test_a_hook_past_its_timeout_is_killed_with_its_children(tmp_path):
    child = tmp_path / "child.pid"
    # the child ignores SIGTERM: SIGKILL to the group gets it
    script = f"sh -c 'trap \"\" TERM; echo $$ > {child}; sleep 300' & sleep 300; wait"
    started = time.monotonic()
    done = run(script, timeout=1)
    assert done.failure == "timed out after 1 s: killed, with its children", done.failure
    assert time.monotonic() - started < 30
    pid = int(child.read_text())
    wait_for(lambda: not alive(pid), 10, f"end of the hook's child {pid}")


# Exporters with hooks ---------------------------------------------------------------------------------------------


def test_hooks_run_as_the_board_changes_holder(exporter_process, tmp_path):
    events = tmp_path / "events"
    path = config(
        tmp_path,
        {
            "beforeLease": {
                "script": f'sleep 1; j power on; echo "before $LEASE_NAME $CLIENT_NAME" >> {events}; echo prepared'
            },
            "afterLease": {"script": f"j power off; echo after $LEASE_NAME >> {events}"},
        },
    )
    exporter = start(exporter_process, path)
    assert STATUS(status(exporter.address).status) == "EXPORTER_STATUS_AVAILABLE"
    with closing(Connection(exporter.address)) as connection:
        first = try_lease(connection, "alice test_1")
        assert isinstance(first, Busy) and "its beforeLease hook, for alice test_1" in first.holder, first
        assert STATUS(status(exporter.address).status) == "EXPORTER_STATUS_BEFORE_LEASE_HOOK"
        lease = take(connection, "alice test_1")
        assert [(run.hook, run.failure, run.output.strip()) for run in lease.hooks] == [("beforeLease", "", "prepared")]
        assert (tmp_path / "state").read_text() == "on"
        assert STATUS(status(exporter.address).status) == "EXPORTER_STATUS_LEASE_READY"
        lease.release()
        wait_for(lambda: len(lines(events)) == 2, what="afterLease")
        before, after = lines(events)
        assert before.startswith("before h-") and before.endswith(" alice test_1"), before
        assert after == f"after {before.split()[1]}"  # LEASE_NAME: the lease's handle, the same for both hooks
        assert (tmp_path / "state").read_text() == "off"
        wait_for(lambda: STATUS(status(exporter.address).status) == "EXPORTER_STATUS_AVAILABLE", what="AVAILABLE")
        take(connection, "bob test_2").release()  # a new holder: both hooks again
        wait_for(lambda: len(lines(events)) == 4, what="bob's hooks")
        assert lines(events)[2].endswith(" bob test_2")


def test_warn_logs_and_goes_on(exporter_process, tmp_path):
    path = config(tmp_path, {"beforeLease": {"script": "j power on; echo 'fuse blown' >&2; exit 3"}})
    exporter = start(exporter_process, path)
    with closing(Connection(exporter.address)) as connection:
        lease = take(connection, "alice")
        assert [(r.failure, r.on_failure, r.output.strip()) for r in lease.hooks] == [
            ("exit status 3", "warn", "fuse blown")
        ]
        answer = status(exporter.address)
        assert STATUS(answer.status) == "EXPORTER_STATUS_LEASE_READY"
        assert answer.message.startswith("Hook warning: beforeLease hook failed: exit status 3"), answer.message
        lease.release()
    wait_for(lambda: "beforeLease hook: fuse blown" in exporter.output(), what="the hook's output in the log")


def test_end_lease_fails_the_waiting_claim_with_the_hooks_output(exporter_process, tmp_path):
    path = config(tmp_path, {"beforeLease": {"script": "echo 'no image to flash'; exit 7", "onFailure": "endLease"}})
    exporter = start(exporter_process, path)
    with closing(Connection(exporter.address)) as connection:
        with pytest.raises(HookFailed) as info:
            take(connection, "alice")
        message = str(info.value)
        assert "its beforeLease hook failed: exit status 7 (onFailure: endLease)" in message, message
        assert message.endswith("no image to flash"), message
        answer = status(exporter.address)
        assert STATUS(answer.status) == "EXPORTER_STATUS_BEFORE_LEASE_HOOK_FAILED", answer
        assert "no image to flash" in answer.message
        assert exporter.alive
        with pytest.raises(HookFailed):  # the next holder's beforeLease runs again, and fails again
            take(connection, "bob")


def test_exit_stops_the_exporter(exporter_process, tmp_path):
    path = config(tmp_path, {"beforeLease": {"script": "echo 'lab is on fire'; exit 1", "onFailure": "exit"}})
    exporter = start(exporter_process, path)
    with closing(Connection(exporter.address)) as connection:
        with pytest.raises(HookFailed, match=r"onFailure: exit; the exporter stops"):
            take(connection, "alice")
    wait_for(lambda: not exporter.alive, what="the exporter's exit")
    assert exporter.returncode == 1
    output = exporter.output()
    assert "stopping: the hook's onFailure is exit" in output and "lab is on fire" in output, output
    assert (tmp_path / "state").read_text() == "closed"  # its drivers closed


def test_a_hook_outlives_a_holder_that_vanished(exporter_process, tmp_path):
    events = tmp_path / "events"
    path = config(
        tmp_path,
        {
            "beforeLease": {"script": f"sleep 3; j power on; echo before >> {events}"},
            "afterLease": {"script": f"j power off; echo after >> {events}"},
        },
    )
    exporter = start(exporter_process, path)
    holder = f"""
import sys, time
from jumpstarter.client.connection import Connection
from jumpstarter.client.lease import try_lease
connection = Connection({exporter.address!r})
try_lease(connection, "doomed")  # busy: its beforeLease runs
print("asked", flush=True)
time.sleep(300)
"""
    with subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "asked"
        finally:
            process.kill()  # it vanishes while its beforeLease hook runs
    # the hook goes on to its end; then the board, prepared for nobody that is left, gets its afterLease
    wait_for(lambda: lines(events) == ["before", "after"], what="both hooks")
    assert (tmp_path / "state").read_text() == "off"
    wait_for(lambda: STATUS(status(exporter.address).status) == "EXPORTER_STATUS_AVAILABLE", what="AVAILABLE")


def test_sigterm_while_a_hook_runs_kills_it_and_closes_the_drivers(exporter_process, tmp_path):
    child = tmp_path / "child.pid"
    script = f"sh -c 'trap \"\" TERM; echo $$ > {child}; sleep 300' & sleep 300"
    exporter = start(exporter_process, config(tmp_path, {"beforeLease": {"script": script}}))
    with closing(Connection(exporter.address)) as connection:
        assert isinstance(try_lease(connection, "alice"), Busy)
    wait_for(child.exists, what="the hook's child")
    pid = int(child.read_text())
    exporter.process.send_signal(signal.SIGTERM)
    wait_for(lambda: not exporter.alive, what="the exporter's exit")
    assert not alive(pid)
    assert (tmp_path / "state").read_text() == "closed"
    assert "beforeLease hook killed, with its children: the exporter stops" in exporter.output()


# The pytest plugin --------------------------------------------------------------------------------------------------

USES_THE_BOARD = """
import os, time

def mark(power):
    assert power.read() == "on"  # its beforeLease hook ran first
    with open({events!r}, "a") as f:
        f.write("test " + os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
    time.sleep(0.1)

{tests}
"""


def board_tests(events: Path, names: list[str], without: tuple[str, ...] | list[str] = ()) -> str:
    """A test module: tests ``names`` on the board (each writes "test WORKER" to ``events``), ``without`` not."""
    tests = [f"def test_{name}(power):\n    mark(power)\n" for name in names]
    tests += [f"def test_{name}():\n    time.sleep(0.1)\n" for name in without]
    return USES_THE_BOARD.format(events=str(events), tests="\n".join(tests))


def holds(events: Path) -> list[tuple[str, list[str]]]:
    """The events as holds: (the worker beforeLease ran for, the workers of the tests run before the next hook)."""
    found: list[tuple[str, list[str]]] = []
    for line in lines(events):
        kind, _, rest = line.partition(" ")
        if kind == "before":
            worker = next((w for w in ("gw0", "gw1") if f" {w}: " in rest), "main")
            found.append((worker, []))
        elif kind == "test":
            assert found, f"a test ran before any beforeLease hook: {lines(events)}"
            found[-1][1].append(rest)
        elif kind == "after":
            found.append(("(after)", []))
    return found


@pytest.fixture
def hooked(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # ours, when this suite runs under xdist
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    monkeypatch.setenv("JUMPSTARTER_CLIENT_MODULES", "hookboard")
    events = tmp_path / "events"
    return config(
        tmp_path,
        {
            "beforeLease": {"script": f'j power on; echo "before $CLIENT_NAME" >> {events}; echo "board ready"'},
            "afterLease": {"script": f"j power off; echo after >> {events}"},
        },
    )


@pytest.mark.parametrize("mode", ["subprocess", "inprocess"])
def test_one_holder_one_before_lease_hook_and_its_output_in_the_report(pytester, hooked, mode):
    events = hooked.parent / "events"
    pytester.makepyfile(test_serial=board_tests(events, ["a", "b", "c", "d"]))
    timeline = hooked.parent / "timeline.html"
    options = ["--exporter-mode", mode, "-rP", "--jumpstarter-timeline", str(timeline)]
    result = pytester.runpytest_subprocess("--exporter", str(hooked), *options)
    result.assert_outcomes(passed=4)
    found = holds(events)
    assert found[0] == ("main", ["main"] * 4), found  # four tests, one holder: one beforeLease
    assert all(worker == "(after)" for worker, _ in found[1:]), found
    output = result.stdout.str()
    assert output.count("its beforeLease hook (for ") == 1, output  # in the report of the test that waited
    assert "succeeded after" in output and "board ready" in output, output
    page = timeline.read_text()
    assert 'class="hook" data-hook="beforeLease" data-exporter="hookboard"' in page, page[:3000]


def test_two_workers_taking_turns_get_one_before_lease_per_change_of_holder(pytester, hooked):
    events = hooked.parent / "events"
    # gw0 runs the first file's tests, all on the board; gw1 one test on the board, then three without it.
    pytester.makepyfile(
        test_a=board_tests(events, ["a1", "a2", "a3", "a4", "a5"]),
        test_b=board_tests(events, ["b1"], without=["b2", "b3", "b4"]),
    )
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadfile", "--exporter", str(hooked))
    result.assert_outcomes(passed=9)
    found = holds(events)
    prepared = [(worker, tests) for worker, tests in found if worker != "(after)"]
    for worker, tests in prepared:  # every test ran on a board prepared for its own worker
        assert tests and set(tests) == {worker}, found
    assert sum(len(tests) for _, tests in prepared) == 6
    assert len(prepared) < 6, found  # a worker keeping the board between its tests is one holder
    befores = [i for i, (worker, _) in enumerate(found) if worker != "(after)"]
    for second in befores[1:]:  # a holder's afterLease before the next one's beforeLease
        assert found[second - 1][0] == "(after)", found


@pytest.mark.parametrize("mode", ["endLease", "exit"])
def test_the_plugin_fails_the_tests_naming_the_failed_hook(pytester, tmp_path, monkeypatch, mode):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    monkeypatch.setenv("JUMPSTARTER_CLIENT_MODULES", "hookboard")
    script = "j power on; echo 'flashing failed: no image'; exit 4"
    path = config(tmp_path, {"beforeLease": {"script": script, "onFailure": mode}})
    pytester.makepyfile(test_x="def test_a(power):\n    pass\n\ndef test_b(power):\n    pass\n")
    result = pytester.runpytest_subprocess("--exporter", str(path), "-p", "no:randomly")
    result.assert_outcomes(errors=2)
    output = result.stdout.str()
    first = f"exporter hookboard: its beforeLease hook failed: exit status 4 (onFailure: {mode}"
    assert first in output and "flashing failed: no image" in output, output
    if mode == "exit":  # the next test: the exporter is gone, and says why
        assert "exporter hookboard stopped: its beforeLease hook failed (exit status 4), and its onFailure is exit" in (
            output
        ), output
    else:  # each test's error names it (the short summary repeats it in full where CI is set: left out)
        errors = output.split("short test summary info")[0]
        assert errors.count(first) == 2, output


# Upstream's jmp shell -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream(say) -> Path:
    """The bin directory of upstream Jumpstarter's virtualenv (set up on the first run, as test_upstream.py)."""
    try:
        return peer.install_upstream(progress=say)
    except peer.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


def interop_with_hooks(folder: Path, hooks: dict[str, Any]) -> Path:
    """tests/upstream/custom.yaml (its demo board and custom driver, installed on both sides) with ``hooks``."""
    doc = yaml.safe_load(peer.CUSTOM_YAML.read_text())
    path = folder / "interop-hooks.yaml"
    path.write_text(yaml.safe_dump({**doc, "hooks": hooks}, sort_keys=False))
    return path


POWER_ON = "python -c 'from jumpstarter.utils.env import env\nwith env() as board: board.board.power.on()'"


@pytest.mark.parametrize("fails", [False, True])
def test_upstream_jmp_shell_waits_for_our_before_lease_hook(upstream, exporter_process, tmp_path, fails):
    events = tmp_path / "events"
    script = f"sleep 2; {POWER_ON}; echo before >> {events}; echo hook-says-hello"
    script += "; echo 'no image'; exit 5" if fails else ""
    ours = exporter_process(
        interop_with_hooks(tmp_path, {"beforeLease": {"script": script, "onFailure": "endLease"}}),
        "--listen",
        "127.0.0.1:0",
    )
    try:
        command: list[str | Path] = ["cat", str(events)]
        shell = peer.jmp_shell(upstream, ours.address, command, "--exporter-logs", cwd=tmp_path, timeout=120)
    except peer.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    if fails:  # upstream's shell says why, and runs nothing
        assert shell.returncode != 0, shell.stdout + shell.stderr
        assert "beforeLease hook failed: exit status 5 (onFailure: endLease)" in shell.stdout + shell.stderr
        assert "no image" in shell.stdout + shell.stderr
    else:  # it ran its command once the hook was done: the file is there, the board's power on
        assert shell.returncode == 0 and shell.stdout.splitlines()[-1] == "before", shell.stdout + shell.stderr
        assert "BEFORE_LEASE_HOOK -> LEASE_READY" in shell.stdout + shell.stderr  # upstream's client waited
    assert "hook-says-hello" in shell.stdout + shell.stderr  # the hook's output, on our LogStream
    assert "beforeLease hook runs, for a client without a lease (ipv" in ours.output(), ours.output()
    assert "[driver] power on" in ours.output() or "power on" in ours.output(), ours.output()
