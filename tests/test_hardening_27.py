"""Hardening (issue 27): how an exporter ends while it starts, the folders it trusts, and clear errors instead of
tracebacks. Secrets in errors are tested in test_presigned.py and test_secrets.py."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from jumpstarter.client.connection import Connection
from jumpstarter.client.lease import Busy, Lease, try_lease
from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export
from jumpstarter.errors import DriverError, LeaseError
from jumpstarter.exporter.process import ExporterProcess

SLOW_DRIVER = """
    import time
    from dataclasses import dataclass
    from pathlib import Path
    from jumpstarter.driver import Driver

    Path(__file__).with_name("imported").write_text("")  # (a held exporter imports its drivers' modules first)

    @dataclass(kw_only=True)
    class Slow(Driver):
        marker: str
        seconds: float = 0

        @classmethod
        def client(cls):
            return "jumpstarter.client.DriverClient"

        def __post_init__(self):
            super().__post_init__()
            Path(self.marker + ".making").write_text("")
            time.sleep(self.seconds)
            Path(self.marker + ".made").write_text("")

        def close(self):
            Path(self.marker + ".closed").write_text("")
            super().close()
    """


def wait_for(condition, timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def slow_exporter(write) -> tuple[Path, Path]:
    """A YAML of three drivers, the second slow to make (it sleeps in __post_init__): its config and its markers'
    folder, where each driver notes being made and closed."""
    write("slow_driver.py", SLOW_DRIVER)
    folder = write("markers/.keep", "").parent
    config = write(
        "slow.yaml",
        f"""
        apiVersion: jumpstarter.dev/v1alpha1
        kind: ExporterConfig
        export:
          first:
            type: slow_driver.Slow
            config: {{marker: "{folder}/first"}}
            children:
              inner: {{type: slow_driver.Slow, config: {{marker: "{folder}/inner"}}}}
          second: {{type: slow_driver.Slow, config: {{marker: "{folder}/second", seconds: 3}}}}
          third: {{type: slow_driver.Slow, config: {{marker: "{folder}/third"}}}}
        """,
    )
    return config, folder


# Item 9: stopped while the drivers are made -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["SIGTERM", "stdin EOF", "SIGINT"])
def test_an_exporter_stopped_while_its_drivers_are_made_closes_those_made(write, how):
    config, folder = slow_exporter(write)
    exporter = ExporterProcess(config, "--listen", "127.0.0.1:0", env={"PYTHONPATH": str(config.parent)})
    try:
        wait_for(lambda: (folder / "second.making").exists(), what="making the second driver")
        if how == "stdin EOF":  # --exit-with-stdin: pytest, which started it, is gone
            assert exporter.process.stdin is not None  # (a pipe)
            exporter.process.stdin.close()
        else:
            exporter.process.send_signal(getattr(signal, how))
        code = exporter.process.wait(60)
    finally:
        exporter.stop()
    output = exporter.output()
    assert code == 0, output
    markers = sorted(p.name for p in folder.iterdir() if p.name != ".keep")
    made = ["first.made", "inner.made", "second.made"]  # the one being made finishes; no other is made
    closed = ["first.closed", "inner.closed", "second.closed"]
    assert markers == sorted([*made, *closed, "first.making", "inner.making", "second.making"]), output
    assert "stopping" in output and "Traceback" not in output, output


# Item 12: clear errors instead of tracebacks ----------------------------------------------------------------------


def run_held(config: Path) -> subprocess.Popen:
    """``jumpstarter run CONFIG --hold``, its standard input a pipe, once it has imported its drivers' modules: it
    waits for the line that lets it go, or is about to."""
    process = subprocess.Popen(
        [sys.executable, "-m", "jumpstarter", "run", str(config), "--listen", "127.0.0.1:0", "--hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(config.parent)},
    )
    imported = config.with_name("imported")
    wait_for(imported.exists, what="the held exporter's import of its drivers' modules")
    imported.unlink()
    return process


def test_a_held_exporter_says_why_it_stops_and_exits_non_zero(write):
    config, folder = slow_exporter(write)
    for how, code, said in (
        ("SIGINT", 130, "SIGINT while held (--hold)"),
        ("stdin EOF", 1, "standard input ended while held (--hold)"),
    ):
        process = run_held(config)
        assert process.stdin is not None and process.stdout is not None  # (PIPEs)
        try:
            if how == "SIGINT":  # Ctrl-C
                process.send_signal(signal.SIGINT)
            else:  # the pytest run that started it ended before letting it go
                process.stdin.close()
            output = process.stdout.read()  # to its end: the exporter has exited
            assert process.wait(60) == code, output
        finally:
            process.kill()
            process.wait()
            process.stdin.close()
            process.stdout.close()
        assert said in output and "no driver was made" in output, output
        assert "Traceback" not in output, output
    assert sorted(p.name for p in folder.iterdir()) == [".keep"]  # no driver was made


def test_a_message_size_beyond_grpcs_is_refused_clearly(write, exporter_process):
    config = Path(__file__).parent.parent / "examples" / "jumpstarter-driver-demo" / "board.yaml"
    for args, env, said in (
        (["--max-message-size", "2048"], {}, "argument --max-message-size: 2048: at most 2047 (MiB)"),
        ([], {"JUMPSTARTER_MAX_MESSAGE_SIZE": "4096"}, "JUMPSTARTER_MAX_MESSAGE_SIZE=4096: at most 2047 (MiB)"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "jumpstarter", "run", str(config), "--listen", "127.0.0.1:0", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and "gRPC takes no bigger message" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    exporter = exporter_process(config, "--listen", "127.0.0.1:0", "--max-message-size", "2047")
    from jumpstarter.client import connect

    with connect(exporter.address) as root:
        assert root.board.add(1, 2) == 3


# Item 13: how deep values nest, counted as the README counts -----------------------------------------------------


def brackets(lists: int) -> list:
    """``lists`` lists, one inside the other, the innermost empty: ``brackets(2) == [[]]``."""
    value: list = []
    for _ in range(lists - 1):
        value = [value]
    return value


@dataclass(kw_only=True)
class Brackets(Driver):
    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    def echo(self, value: object) -> object:
        return value

    @export
    def make(self, lists: int) -> list:
        return brackets(lists)


def test_32_lists_one_inside_the_other_travel_both_ways_and_33_are_refused():
    from jumpstarter.values import MAX_DEPTH

    assert MAX_DEPTH == 32 and brackets(2) == [[]]  # the README's count
    with serve(Brackets()) as client:
        assert client.call("echo", brackets(32)) == brackets(32)  # an argument, and a result
        assert client.call("make", 32) == brackets(32)
        with pytest.raises(TypeError, match=r"^echo: argument 1\[0\].*nests deeper than 32 levels"):
            client.call("echo", brackets(33))
        with pytest.raises(DriverError, match=r"^make: .*nests deeper than 32 levels"):
            client.call("make", 33)


# Items 11 and 12: the folders the socket and the lock files go in ------------------------------------------------

BOARD_YAML = Path(__file__).parent.parent / "examples" / "jumpstarter-driver-demo" / "board.yaml"


def run_board(runtime_dir: Path) -> subprocess.CompletedProcess:
    """``jumpstarter run board.yaml`` on its default socket under ``runtime_dir``, expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "jumpstarter", "run", str(BOARD_YAML)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)},
        stdin=subprocess.DEVNULL,
    )


def test_a_socket_folder_under_a_folder_others_may_write_is_refused_naming_both(tmp_path, exporter_process):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # another user could move our folder aside and serve a socket of theirs in its place
    done = run_board(shared)
    assert done.returncode == 1, done.stderr
    folder = shared / f"jumpstarter-{os.getuid()}"
    assert f"{shared}, the folder above {folder}, may be written by others (mode 0777, not sticky)" in done.stderr
    assert "XDG_RUNTIME_DIR" in done.stderr and "chmod +t" in done.stderr and "Traceback" not in done.stderr
    shared.chmod(0o1777)  # sticky, as /tmp: only the owner of a name may move it
    exporter = exporter_process(BOARD_YAML, env={"XDG_RUNTIME_DIR": str(shared)})
    assert exporter.address == f"unix://{folder}/board.sock"


@pytest.mark.parametrize("thing", ["file", "dangling symlink"])
def test_a_file_or_dangling_symlink_at_the_socket_folders_name_is_named(tmp_path, thing):
    folder = tmp_path / f"jumpstarter-{os.getuid()}"
    if thing == "file":
        folder.write_text("")
    else:
        folder.symlink_to(tmp_path / "gone")
    done = run_board(tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"{folder} is not a folder (a file, or a symlink)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# Item 7: the lock file that stands for a lease where the exporter keeps none --------------------------------------

AS_ANOTHER_USER = """
import os, sys
from jumpstarter.client.connection import Connection
from jumpstarter.client.lease import try_lease

address, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# The channel is made while still root: gRPC imports modules as it makes one, and the checkout (a CI clone under
# a private folder) may be unreadable to the other user. The lock file is made by try_lease, as the other user.
connection = Connection(address)
os.setgroups([])
os.setgid(gid)
os.setuid(uid)  # from here on, another user: the modules are loaded (root's interpreter is private to root)
taken = try_lease(connection, f"uid {uid}")
print(type(taken).__name__, taken, flush=True)
sys.stdin.read()  # held until the test closes standard input
"""


@pytest.fixture
def another_user() -> Iterator[tuple[int, int]]:
    """A second user of this machine (uid, gid), removed afterwards: the tests run as root."""
    if os.getuid() != 0 or not shutil.which("useradd"):
        pytest.skip("making a second user needs root and useradd")
    name = f"jstest{os.getpid()}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def upstream_like_exporter() -> Iterator[str]:
    """The address of a gRPC server without our LeaseService (an upstream exporter, as far as leases go)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_the_lock_file_of_an_exporter_without_leases_keeps_two_users_apart(
    another_user, upstream_like_exporter, monkeypatch
):
    uid, gid = another_user
    shared = Path(tempfile.mkdtemp(prefix="jumpstarter-test-", dir="/tmp"))  # a temp directory as /tmp is
    shared.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    other = subprocess.Popen(
        [sys.executable, "-c", AS_ANOTHER_USER, upstream_like_exporter, str(uid), str(gid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(shared)},
    )
    assert other.stdin is not None and other.stdout is not None  # (PIPEs)
    try:
        said = other.stdout.readline()
        assert said.startswith("Lease "), said + other.stdout.read()
        connection = Connection(upstream_like_exporter)
        try:
            busy = try_lease(connection, "root")
            assert isinstance(busy, Busy) and busy.holder == f"uid {uid}", busy
            other.stdin.close()
            assert other.wait(30) == 0, other.stdout.read()
            lease = try_lease(connection, "root")  # free once the other user's process let go
            assert isinstance(lease, Lease), lease
            lease.release()
        finally:
            connection.close()
    finally:
        other.kill()
        other.wait()
        other.stdin.close()
        other.stdout.close()
        shutil.rmtree(shared)


@pytest.mark.parametrize("planted", ["symlink", "hard link", "folder"])
def test_a_link_planted_at_the_lock_files_name_is_refused_and_its_target_left_alone(
    upstream_like_exporter, tmp_path, monkeypatch, planted
):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    connection = Connection(upstream_like_exporter)
    try:
        lease = try_lease(connection, "me")
        assert isinstance(lease, Lease)
        lock = Path(lease.lease_id.removeprefix("lock:"))
        assert lock.parent == shared and lock.stat().st_mode & 0o777 == 0o666  # every user's processes open it
        lease.release()
        victim = tmp_path / "victim"  # a file of ours that another user would have us overwrite
        victim.write_text("precious")
        lock.unlink()
        if planted == "symlink":
            lock.symlink_to(victim)
        elif planted == "hard link":
            os.link(victim, lock)
        else:
            lock.mkdir()
        why = {"symlink": "is a symlink", "hard link": "has 2 hard links", "folder": "is a folder"}[planted]
        with pytest.raises(LeaseError, match=rf"lease can't be used: {re.escape(str(lock))} {why}: it is no lock file"):
            try_lease(connection, "me")
        assert victim.read_text() == "precious"
    finally:
        connection.close()


def test_a_lock_file_in_a_temp_directory_others_may_write_is_refused(upstream_like_exporter, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: another user could swap the lock file for theirs
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    connection = Connection(upstream_like_exporter)
    try:
        with pytest.raises(
            LeaseError, match=rf"can't be used: {re.escape(str(shared))}, the folder above .*, may be written by"
        ):
            try_lease(connection, "me")
    finally:
        connection.close()


# Item 6, the exporter's side: a driver's close() that fails names no credential either ----------------------------


@dataclass(kw_only=True)
class LeakyClose(Driver):
    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    def close(self) -> None:
        try:
            raise OSError("PUT https://bob:hunter22@h/log?X-Amz-Signature=cause-secret failed")
        except OSError as exc:
            raise RuntimeError("flushing with token=close-secret failed") from exc


def test_a_failed_close_is_logged_without_its_credentials(caplog):
    caplog.set_level(logging.DEBUG)
    with serve(LeakyClose()) as client:
        assert client.uuid
    assert "closing the root driver (LeakyClose) failed: flushing with token=[REDACTED] failed" in caplog.text
    assert "Traceback" in caplog.text  # -v's traceback, its cause included
    for secret in ("close-secret", "cause-secret", "hunter22"):
        assert secret not in caplog.text, caplog.text


def test_what_drivers_log_reaches_the_exporters_log_and_clients_without_credentials(write, exporter_process, caplog):
    write(
        "chatty_driver.py",
        """
        from dataclasses import dataclass
        from jumpstarter.driver import Driver, export

        @dataclass(kw_only=True)
        class Chatty(Driver):
            @classmethod
            def client(cls):
                return "jumpstarter.client.DriverClient"

            @export
            def fetch(self) -> None:
                self.logger.warning("fetching https://bob:hunter22@h/img?X-Amz-Signature=log-secret")
        """,
    )
    config = write(
        "chatty.yaml",
        """
        apiVersion: jumpstarter.dev/v1alpha1
        kind: ExporterConfig
        export:
          chatty: {type: chatty_driver.Chatty}
        """,
    )
    exporter = exporter_process(config, "--listen", "127.0.0.1:0", env={"PYTHONPATH": str(config.parent)})
    from jumpstarter.client import connect

    with connect(exporter.address) as root, caplog.at_level("INFO", logger="exporter:driver"), root.log_stream():
        deadline = time.monotonic() + 30
        while not [r for r in caplog.records if r.name == "exporter:driver"]:
            root.chatty.call("fetch")
            assert time.monotonic() < deadline, "no exporter log record arrived"
            time.sleep(0.05)
    remote = [r.getMessage() for r in caplog.records if r.name == "exporter:driver"]
    assert remote[0] == "fetching https://[REDACTED]@h/img?[REDACTED]", remote
    exporter.stop()
    assert "fetching https://[REDACTED]@h/img?[REDACTED]" in exporter.output(), exporter.output()
    for secret in ("hunter22", "log-secret"):
        assert secret not in exporter.output(), exporter.output()


def test_a_response_the_client_went_away_from_ends_the_call_as_cancelled_not_as_an_error(caplog):
    """A client killed while the exporter sends it a paced call's items: the send can fail before gRPC has
    noticed the client went away, and gRPC then logged the handler's ExecuteBatchError as an ERROR with a
    traceback (a soak's killed clients made 2-4 in five minutes). The call ends as cancelled, which gRPC logs
    at debug level only. (The race can't be made to happen on demand: the send's failure is given here.)"""
    from grpc._cython.cygrpc import ExecuteBatchError

    from jumpstarter.exporter.server import _respond

    closed = []

    async def items(request, context):
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    class GoneClient:
        async def write(self, response):
            raise ExecuteBatchError('Failed "execute_batch"')

    gone: Any = GoneClient()  # a ServicerContext's write, failing
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_respond(items, None, gone))
    assert closed == [True]  # the generator was closed (its finally ran): the producer stops
