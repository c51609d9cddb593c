"""Exporter hooks at the edges: an exporter that stops tidies its board (afterLease), hooks reach a TLS exporter
and call it as upstream's ``j`` does (no lease of ours) through its private socket, and an exporter that a hook
stopped (onFailure exit) is named so in every xdist worker.

Real exporters (``jumpstarter run``) serving tests/hooks/hookboard.py, as in test_hooks.py.
"""

from __future__ import annotations

import signal
import stat
from contextlib import closing
from pathlib import Path

import pytest
from test_hooks import HERE, alive, config, interop_with_hooks, lines, start, take, upstream, wait_for  # noqa: F401

from jumpstarter.client import connect
from jumpstarter.client.connection import Connection
from jumpstarter.client.lease import Busy, try_lease

ENV = {"PYTHONPATH": str(HERE), "JUMPSTARTER_CLIENT_MODULES": "hookboard"}

# An afterLease that tidies the board: power off, then note what the board says (its drivers still open).
TIDY = 'j power off; echo "after $(j power read) $CLIENT_NAME" >> {events}'


def test_sigterm_runs_the_holders_after_lease_before_closing_the_drivers(exporter_process, tmp_path):
    events = tmp_path / "events"
    hooks = {"beforeLease": {"script": "j power on"}, "afterLease": {"script": TIDY.format(events=events)}}
    exporter = start(exporter_process, config(tmp_path, hooks))
    with closing(Connection(exporter.address)) as connection:
        lease = take(connection, "alice test_1")
        assert (tmp_path / "state").read_text() == "on"
        exporter.process.send_signal(signal.SIGTERM)  # while alice holds the board
        wait_for(lambda: not exporter.alive, what="the exporter's exit")
        lease.release()
    assert exporter.returncode == 0, exporter.output()
    assert lines(events) == ["after off alice test_1"], exporter.output()  # run while the drivers were open
    assert (tmp_path / "state").read_text() == "closed"  # then closed
    output = exporter.output()
    assert "stops once its afterLease hook has run" in output and "afterLease hook done" in output, output


def test_sigterm_during_before_lease_kills_it_then_runs_the_after_lease(exporter_process, tmp_path):
    child, events = tmp_path / "child.pid", tmp_path / "events"
    before = f"j power on; sh -c 'trap \"\" TERM; echo $$ > {child}; sleep 300' & sleep 300"
    hooks = {"beforeLease": {"script": before}, "afterLease": {"script": TIDY.format(events=events)}}
    exporter = start(exporter_process, config(tmp_path, hooks))
    with closing(Connection(exporter.address)) as connection:
        assert isinstance(try_lease(connection, "bob"), Busy)  # its beforeLease runs
        wait_for(child.exists, what="the beforeLease hook's child")
        exporter.process.send_signal(signal.SIGTERM)
        wait_for(lambda: not exporter.alive, what="the exporter's exit")
    assert not alive(int(child.read_text()))  # killed, with its children
    assert lines(events) == ["after off bob"], exporter.output()  # the board it half prepared is tidied
    assert (tmp_path / "state").read_text() == "closed"
    output = exporter.output()
    assert output.index("beforeLease hook killed") < output.index("afterLease hook runs"), output


def test_a_second_sigterm_kills_the_after_lease_and_stops_at_once(exporter_process, tmp_path):
    child = tmp_path / "child.pid"
    after = f"sh -c 'trap \"\" TERM; echo $$ > {child}; sleep 300' & sleep 300"
    exporter = start(exporter_process, config(tmp_path, {"afterLease": {"script": after, "timeout": 600}}))
    with closing(Connection(exporter.address)) as connection:
        lease = take(connection, "carol")
        exporter.process.send_signal(signal.SIGTERM)
        wait_for(child.exists, what="the afterLease hook's child")
        assert exporter.alive  # it waits for the hook that tidies the board
        exporter.process.send_signal(signal.SIGTERM)
        wait_for(lambda: not exporter.alive, 60, what="the exporter's exit")  # far sooner than the hook's 600 s
        lease.release()
    assert not alive(int(child.read_text()))
    assert (tmp_path / "state").read_text() == "closed"
    output = exporter.output()
    assert "SIGTERM again: the hook is killed, with its children" in output, output


def test_a_hook_reaches_a_tls_exporter(exporter_process, tmp_path, tls_files):
    cert, key = tls_files
    events = tmp_path / "events"
    path = config(tmp_path, {"beforeLease": {"script": f'j power on; echo "$JUMPSTARTER_HOST" >> {events}'}})
    exporter = exporter_process(
        path, "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key), env=ENV
    )
    with closing(Connection(exporter.address, tls=str(cert))) as connection:
        lease = take(connection, "alice")
        assert [(run.hook, run.failure) for run in lease.hooks] == [("beforeLease", "")], lease.hooks
        lease.release()
    assert (tmp_path / "state").read_text() == "on"
    socket = Path(lines(events)[0])  # the hook's private socket, in a folder only its user may enter
    assert socket.name == "exporter.sock" and stat.S_IMODE(socket.parent.stat().st_mode) == 0o700, socket
    exporter.stop()
    assert not socket.parent.exists()  # removed at stop


LEASELESS = """\
import os, sys, time
from jumpstarter.client import connect

with connect(os.environ["JUMPSTARTER_HOST"]) as board:  # no lease nor passphrase, as upstream's j: the hook's own
    board.power.on()
    print("powered on without a lease", flush=True)
    open(sys.argv[1], "w").write("called")
    deadline = time.monotonic() + 120
    while not os.path.exists(sys.argv[2]):  # the test checks that others are refused meanwhile
        assert time.monotonic() < deadline, "no go"
        time.sleep(0.05)
"""


def test_a_hooks_call_without_a_lease_is_its_own_and_others_stay_refused(exporter_process, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # hookboard's client class, for the other client
    monkeypatch.setenv("JUMPSTARTER_CLIENT_MODULES", "hookboard")
    script, called, go = tmp_path / "leaseless.py", tmp_path / "called", tmp_path / "go"
    script.write_text(LEASELESS)
    path = config(tmp_path, {"beforeLease": {"script": f"python {script} {called} {go}", "onFailure": "endLease"}})
    exporter = exporter_process(path, "--listen", "127.0.0.1:0", "--passphrase", "pw", env=ENV)
    with closing(Connection(exporter.address, passphrase="pw")) as connection:
        assert isinstance(try_lease(connection, "alice"), Busy)  # its beforeLease runs
        wait_for(called.exists, what="the hook's call")
        assert (tmp_path / "state").read_text() == "on"
        with connect(exporter.address, passphrase="pw") as other:  # another client without a lease: refused
            with pytest.raises(Exception, match="leased by its beforeLease hook, for alice"):
                other.power.off()
        go.write_text("")
        lease = take(connection, "alice")
        assert [(run.failure, run.output.strip()) for run in lease.hooks] == [("", "powered on without a lease")]
        lease.release()
    assert (tmp_path / "state").read_text() == "on"  # the other client's call never ran


# -I: upstream's own jumpstarter, not ours from the folder the hook runs in; only upstream's has that module.
UPSTREAM_POWER_ON = """\
{python} -I -c 'import jumpstarter.exporter.auth
from jumpstarter.utils.env import env
with env() as client:
    client.board.children["power"].on()
    print("upstream powered on")'
"""


def test_upstreams_client_in_a_hook_drives_the_board(upstream, exporter_process, tmp_path):  # noqa: F811 (a fixture)
    """Upstream's env() (what its `j` uses), from upstream's virtualenv: it sends no lease of ours. (Upstream's
    `j` itself has no command for the demo board: its clients have no CLI.)"""
    script = UPSTREAM_POWER_ON.format(python=upstream / "python")
    path = interop_with_hooks(tmp_path, {"beforeLease": {"script": script, "onFailure": "endLease"}})
    exporter = exporter_process(path, "--listen", "127.0.0.1:0")
    with closing(Connection(exporter.address)) as connection:
        lease = take(connection, "alice")
        assert [(run.failure, run.output.strip()) for run in lease.hooks] == [("", "upstream powered on")]
        lease.release()
    assert "power on [its beforeLease hook, for alice]" in exporter.output(), exporter.output()


# onFailure exit, seen from another xdist worker --------------------------------------------------------------------

WAITS_FOR_THE_STOP = """
import os, time

def test_b1_waits_until_the_exporter_has_stopped():
    deadline = time.monotonic() + 120
    while not os.path.exists({pid!r}):
        assert time.monotonic() < deadline, "no beforeLease hook ran"
        time.sleep(0.05)
    pid = int(open({pid!r}).read())
    while True:
        try:
            state = open(f"/proc/{{pid}}/stat").read().split(")")[-1].split()[0]
        except OSError:
            break
        if state == "Z":
            break
        assert time.monotonic() < deadline, "the exporter did not stop"
        time.sleep(0.05)

def test_b2(power):
    pass
"""


def test_every_worker_names_the_hook_that_stopped_the_exporter(pytester, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    monkeypatch.setenv("JUMPSTARTER_CLIENT_MODULES", "hookboard")
    pid = tmp_path / "exporter.pid"
    script = f"echo $PPID > {pid}.new; mv {pid}.new {pid}; echo 'flashing failed: no image'; exit 4"
    path = config(tmp_path, {"beforeLease": {"script": script, "onFailure": "exit"}})
    pytester.makepyfile(test_a="def test_a(power):\n    pass\n", test_b=WAITS_FOR_THE_STOP.format(pid=str(pid)))
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadfile", "-p", "no:randomly", "--exporter", str(path)
    )
    result.assert_outcomes(passed=1, errors=2)
    output = result.stdout.str()
    b2 = output.split("ERROR at setup of test_b2")[1].split(" jumpstarter: exporters ")[0].split("ERROR at setup of")[0]
    stopped = "exporter hookboard stopped: its beforeLease hook failed (exit status 4), and its onFailure is exit"
    assert stopped in b2, output
    assert "its beforeLease hook failed: exit status 4 (onFailure: exit" in output, output  # test_a's
