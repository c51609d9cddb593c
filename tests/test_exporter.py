"""``jumpstarter run`` as a user runs it: a subprocess serving YAML, reached over unix sockets and TCP."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from samples import EXAMPLES, SEED_YAML

from jumpstarter.client import CompositeClient, connect
from jumpstarter.errors import AuthenticationError, ConnectError
from jumpstarter.exporter.process import ExporterProcess
from jumpstarter.v1 import common_pb2, jumpstarter_pb2, jumpstarter_pb2_grpc, router_pb2_grpc

BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"
CUSTOM_YAML = EXAMPLES / "jumpstarter-custom-driver" / "custom.yaml"
UPSTREAM_COMPOSITE = "jumpstarter_driver_composite.client.CompositeClient"


def test_default_unix_socket_serves_the_custom_example(exporter_process, tmp_path):
    exporter = exporter_process(CUSTOM_YAML, env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert exporter.address == f"unix://{tmp_path}/jumpstarter-{os.getuid()}/custom.sock"
    with connect(exporter.address) as root:
        assert isinstance(root, CompositeClient)
        assert root.labels["jumpstarter.dev/client"] == UPSTREAM_COMPOSITE
        assert type(root.custom).__name__ == "CustomClient"
        listing = root.custom.execute("ls", [str(EXAMPLES)])
        assert "jumpstarter-custom-driver" in listing.split()
    assert exporter.stop() == 0, exporter.output()


def test_tcp_listen_with_console_script(tmp_path):
    """The ``jumpstarter`` console script, on a TCP port chosen by the system."""
    script = shutil.which("jumpstarter", path=str(Path(sys.executable).parent))
    assert script, "the jumpstarter console script is not installed next to this python"
    with subprocess.Popen(
        [script, "run", str(BOARD_YAML), "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith(f"jumpstarter: serving {BOARD_YAML} at 127.0.0.1:"), line
            with connect(line.rsplit(" at ", 1)[1].strip()) as root:
                assert root.board.describe() == {"name": "demo-1", "baudrate": 9600}
                assert root.board.add(20000, 1) == 20001
                root.board.power.on()
                assert root.board.power.read() is True
                assert list(root.board.count(3)) == [0, 1, 2]
                with root.board.stream("console") as console:
                    console.send(b"over tcp")
                    assert console.receive() == b"over tcp"
        finally:
            process.terminate()
    assert process.returncode == 0


def test_errors_carry_the_export_path(exporter_process):
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0")
    with connect(exporter.address) as root:
        with pytest.raises(TimeoutError, match=r"^board\.fail: too slow$"):
            root.board.fail("timeout", "too slow")
        with pytest.raises(AttributeError, match=r"board\.power\.nope: method 'nope' of Power does not exist"):
            root.board.power.call("nope")
        assert root.board.power.read() is False


def test_passphrase_required_wrong_and_right(exporter_process):
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0", "--passphrase", "s3cret")
    with pytest.raises(AuthenticationError, match=f"exporter at {exporter.address} requires a passphrase"):
        connect(exporter.address)
    with pytest.raises(AuthenticationError, match="refused the passphrase"):
        connect(exporter.address, passphrase="guess")
    with connect(exporter.address, passphrase="s3cret") as root:
        assert root.board.echo("in") == "in"
        with root.board.stream("console") as console:
            console.send(b"x")
            assert console.receive() == b"x"
    # every RPC is guarded, streams included
    with grpc.insecure_channel(exporter.address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Stream(iter(()), metadata=(("request", "{}"),)))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_passphrase_from_environment(exporter_process):
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0", env={"JUMPSTARTER_PASSPHRASE": "envpass"})
    with pytest.raises(AuthenticationError):
        connect(exporter.address)
    with connect(exporter.address, passphrase="envpass") as root:
        assert root.board.echo(1) == 1


def test_sigterm_and_sigint_close_the_drivers(exporter_process, write):
    write(
        "marking_driver.py",
        """
        from dataclasses import dataclass
        from pathlib import Path
        from jumpstarter.driver import Driver, export

        @dataclass(kw_only=True)
        class Marking(Driver):
            marker: str

            @classmethod
            def client(cls):
                return "jumpstarter.client.DriverClient"

            @export
            def ping(self):
                return "pong"

            def close(self):
                Path(self.marker).write_text("closed")
                super().close()
        """,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        marker = write(f"closed-{signum}", "")
        marker.unlink()
        config = write(
            "marking.yaml",
            f"""
            apiVersion: jumpstarter.dev/v1alpha1
            kind: ExporterConfig
            export:
              dut:
                type: marking_driver.Marking
                config: {{marker: "{marker}"}}
            """,
        )
        exporter = exporter_process(config, "--listen", "127.0.0.1:0", env={"PYTHONPATH": str(config.parent)})
        with connect(exporter.address) as root:
            assert root.dut.call("ping") == "pong"
        exporter.process.send_signal(signum)
        assert exporter.stop() == 0, exporter.output()
        assert marker.read_text() == "closed", exporter.output()


def test_seed_yaml_mistake_exits_2_with_a_suggestion(write):
    config = write("custom.yaml", SEED_YAML)
    done = subprocess.run([sys.executable, "-m", "jumpstarter", "run", str(config)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"jumpstarter: {config}:9: export 'custom': type 'jumpstarter_driver_custom.CustomDriver': no module named "
        "'jumpstarter_driver_custom'; did you mean 'jumpstarter_custom_driver.CustomDriver'? "
        "(installed: jumpstarter_custom_driver)"
    )
    assert "Traceback" not in done.stderr


def test_upstream_command_line_spelling_is_understood():
    """`jmp run --exporter-config F --tls-grpc-listener A --tls-grpc-insecure` carries over as `jumpstarter run ...`."""
    command = [sys.executable, "-m", "jumpstarter", "run", "--exporter-config", str(BOARD_YAML)]
    command += ["--tls-grpc-listener", "127.0.0.1:0", "--tls-grpc-insecure", "--passphrase", "pw"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith(f"jumpstarter: serving {BOARD_YAML} at 127.0.0.1:"), line
            with connect(line.rsplit(" at ", 1)[1].strip(), passphrase="pw") as root:
                assert root.board.add(1, 2) == 3
        finally:
            process.terminate()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([str(BOARD_YAML), "--exporter-config", str(BOARD_YAML)], "give the config once"),
        (["--listen", "127.0.0.1:0"], "the ExporterConfig YAML file is required"),
        (
            [str(BOARD_YAML), "--listen", "127.0.0.1:0", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
            "--tls-cert c.pem: No such file",
        ),
        (
            [str(BOARD_YAML), "--listen", "127.0.0.1:0", "--tls-cert", "c.pem"],
            "TLS needs both --tls-cert and --tls-key",
        ),
        ([str(BOARD_YAML), "--tls-cert", "c.pem", "--tls-key", "k.pem"], "need a TCP address"),
        ([str(BOARD_YAML), "--tls-grpc-listener", "127.0.0.1:0"], "--tls-grpc-listener serves TLS: give --tls-cert"),
        ([str(BOARD_YAML), "--listen", "a:1", "--tls-grpc-listener", "b:2", "--tls-grpc-insecure"], "address once"),
    ],
)
def test_command_line_mistakes_are_named(args, message):
    done = subprocess.run([sys.executable, "-m", "jumpstarter", "run", *args], capture_output=True, text=True)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_address_in_use_is_reported(exporter_process):
    first = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0")
    done = subprocess.run(
        [sys.executable, "-m", "jumpstarter", "run", str(BOARD_YAML), "--listen", first.address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    # the cause in the exporter's own error, not only in gRPC's log line before it
    error = [line for line in done.stderr.splitlines() if line.startswith("jumpstarter: ")]
    assert error == [
        f"jumpstarter: can't listen on {first.address}: address {first.address} already in use "
        + ("(another exporter or program listens there: stop it, or choose another port; port 0 picks a free one)")
    ], done.stderr
    assert "Traceback" not in done.stderr


def test_stale_socket_is_reclaimed_but_a_live_one_is_not(exporter_process, tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    first = exporter_process(BOARD_YAML, env=env)
    done = subprocess.run(
        [sys.executable, "-m", "jumpstarter", "run", str(BOARD_YAML)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert done.returncode != 0 and f"already serves at {first.address}" in done.stderr
    first.kill()  # leaves its socket file behind
    assert Path(first.address.removeprefix("unix://")).exists()
    second = exporter_process(BOARD_YAML, env=env)
    with connect(second.address) as root:
        assert root.board.echo("again") == "again"


@pytest.fixture(scope="module")
def channel():
    """A gRPC channel to board.yaml served by ``jumpstarter run``."""
    with ExporterProcess.start(BOARD_YAML, "--listen", "127.0.0.1:0") as exporter:
        with grpc.insecure_channel(exporter.address) as channel:
            yield channel


class TestWire:
    """The jumpstarter.v1 services as any gRPC client sees them."""

    def test_report_describes_the_tree(self, channel):
        report = jumpstarter_pb2_grpc.ExporterServiceStub(channel).GetReport(Empty())
        assert report.labels == {"board": "demo", "jumpstarter.dev/name": "demo"}  # metadata.labels and .name
        by_name = {r.labels.get("jumpstarter.dev/name", ""): r for r in report.reports}
        assert by_name[""].uuid == report.uuid
        assert by_name[""].labels["jumpstarter.dev/client"] == UPSTREAM_COMPOSITE
        assert by_name["board"].parent_uuid == report.uuid
        assert by_name["power"].parent_uuid == by_name["board"].uuid
        assert by_name["power"].labels["jumpstarter.dev/client"] == "jumpstarter_driver_demo.client.PowerClient"

    def test_status_and_end_session(self, channel):
        stub = jumpstarter_pb2_grpc.ExporterServiceStub(channel)
        status = stub.GetStatus(jumpstarter_pb2.GetStatusRequest())
        assert status.status == common_pb2.EXPORTER_STATUS_LEASE_READY
        assert stub.EndSession(jumpstarter_pb2.EndSessionRequest()).success

    def test_log_stream_carries_driver_records(self, channel):
        stub = jumpstarter_pb2_grpc.ExporterServiceStub(channel)
        report = stub.GetReport(Empty())
        power = next(r for r in report.reports if r.labels.get("jumpstarter.dev/name") == "power")
        logs = stub.LogStream(Empty())
        try:
            time.sleep(0.2)  # let the subscription reach the exporter
            stub.DriverCall(jumpstarter_pb2.DriverCallRequest(uuid=power.uuid, method="on"))
            record = next(logs)
        finally:
            logs.cancel()
        assert (record.uuid, record.severity, record.message) == (power.uuid, "INFO", "power on")
        assert record.source == common_pb2.LOG_SOURCE_DRIVER
        assert record.timestamp.seconds > 0

    def test_reset(self, channel):
        stub = jumpstarter_pb2_grpc.ExporterServiceStub(channel)
        stub.Reset(jumpstarter_pb2.ResetRequest())

    def test_bad_stream_requests_are_refused_and_the_exporter_lives(self, channel):
        router = router_pb2_grpc.RouterServiceStub(channel)
        for request, code in [
            ("not json", grpc.StatusCode.INVALID_ARGUMENT),
            ('{"kind": "other"}', grpc.StatusCode.UNIMPLEMENTED),
            ('{"kind": "driver", "uuid": "nope", "method": "connect"}', grpc.StatusCode.NOT_FOUND),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                list(router.Stream(iter(()), metadata=(("request", request),)))
            assert info.value.code() == code, request
        report = jumpstarter_pb2_grpc.ExporterServiceStub(channel).GetReport(Empty())
        assert report.reports


def test_nothing_listening_fails_fast_naming_the_address(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    for where in (address, f"unix://{tmp_path}/none.sock"):
        started = time.monotonic()
        with pytest.raises(ConnectError, match=f"no exporter answers at {where}"):
            connect(where)
        assert time.monotonic() - started < 3


def test_readme_demo_serves_and_calls_the_seed_driver():
    demo = EXAMPLES / "demo.py"
    done = subprocess.run([sys.executable, str(demo)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "export 'custom': jumpstarter_custom_driver.CustomClient" in done.stdout
    assert ">>> exporter.custom.ls()\n" in done.stdout and "pyproject.toml" in done.stdout


def test_exporter_that_fails_to_start_reports_its_output(write):
    from jumpstarter.exporter.process import ExporterStartError

    config = write("custom.yaml", SEED_YAML)
    with pytest.raises(ExporterStartError, match=r"(?s)exited with code 2:.*did you mean 'jumpstarter_custom_driver"):
        ExporterProcess.start(config)


def test_shell_runs_a_command_connected_to_the_exporter(exporter_process, tmp_path):
    """`jumpstarter shell ADDRESS -- COMMAND`: env() inside reaches the exporter; the command's exit code is kept."""
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0", "--passphrase", "pw")
    script = tmp_path / "script.py"
    script.write_text(
        "import os, sys\n"
        "from jumpstarter.utils.env import env\n"
        "with env() as client:\n"
        "    print(client.board.add(2, 3), os.environ['JMP_EXPORTER'], os.environ['JMP_GRPC_INSECURE'])\n"
        "sys.exit(3)\n"
    )
    command = [sys.executable, "-m", "jumpstarter", "shell", exporter.address, "--passphrase", "pw"]
    done = subprocess.run([*command, "--", sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (3, "5 demo 1\n"), done.stderr
    missing = subprocess.run([*command, "--", "/no/such/command"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 127
    assert "can't run '/no/such/command': No such file or directory" in missing.stderr


def test_a_call_to_a_frozen_exporter_fails_within_seconds(exporter_process):
    """Frozen (SIGSTOP: a suspended VM), its TCP connection up: the caller is told within seconds, not a minute."""
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0")
    with connect(exporter.address) as root:
        assert root.board.add(1, 2) == 3
        exporter.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(ConnectError, match=f"exporter at {exporter.address} stopped answering"):
                root.board.add(1, 2)
            # 3 s of unanswered ping, plus when the ping goes out: well under gRPC's own 60 s even on a loaded machine
            assert time.monotonic() - started < 20
        finally:
            exporter.process.send_signal(signal.SIGCONT)


def test_inspect_shows_the_drivers_methods_and_signatures(exporter_process):
    """`jumpstarter inspect ADDRESS`: the tree, each driver's client class, exported methods' help, and the
    client methods a test calls with their signatures."""
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0", "--passphrase", "pw")
    command = [sys.executable, "-m", "jumpstarter", "inspect", exporter.address]
    done = subprocess.run([*command, "--passphrase", "pw"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"exporter at {exporter.address} (board=demo, jumpstarter.dev/name=demo)"
    assert "  board: jumpstarter_driver_demo.client.BoardClient" in lines
    assert "      count: Yield 0 .. n-1." in lines  # exported, with its docstring
    assert "      add(a: int, b: int) -> int" in lines  # the client's method, as a test calls it
    assert "      ticks(n: int, interval: float = 0.0) -> Iterator[int]" in lines
    assert "    board.power: jumpstarter_driver_demo.client.PowerClient" in lines
    assert "        read() -> bool" in lines
    power = lines[lines.index("    board.power: jumpstarter_driver_demo.client.PowerClient") :]
    # every exported method, those without help too (read has no docstring)
    assert power[1:6] == [
        "      exported methods:",
        "        off: Switch the board off.",
        "        on: Switch the board on.",
        "        read",
        "      client methods (PowerClient):",
    ], power
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "requires a passphrase" in refused.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "the exporter's address is required"),
        (["127.0.0.1:1", "--tls-grpc", "127.0.0.1:2"], 2, "give the address once"),
        (["127.0.0.1:1", "--", "true"], 1, "no exporter answers at 127.0.0.1:1"),
        (["--tls-grpc", "127.0.0.1:1", "--", "true"], 1, "no exporter answers at 127.0.0.1:1 over TLS"),
        (["127.0.0.1:1", "--tls-ca", "nope.pem", "--", "true"], 2, "--tls-ca nope.pem: no such CA certificate file"),
    ],
)
def test_shell_mistakes_are_named(args, code, message):
    done = subprocess.run([sys.executable, "-m", "jumpstarter", "shell", *args], capture_output=True, text=True)
    assert done.returncode == code
    assert message in done.stderr and "Traceback" not in done.stderr


def test_env_outside_a_shell_says_what_to_do(monkeypatch):
    from jumpstarter.errors import EnvironmentVariableNotSetError
    from jumpstarter.utils.env import env

    monkeypatch.delenv("JUMPSTARTER_HOST", raising=False)
    with pytest.raises(EnvironmentVariableNotSetError, match="JUMPSTARTER_HOST is not set: run this inside"):
        with env():
            pass


def test_env_speaks_tls_to_a_tls_shells_exporter(monkeypatch, exporter_process):
    """Without JMP_GRPC_INSECURE=1 a shell's exporter speaks TLS: never plain gRPC to it."""
    from jumpstarter.utils.env import env

    plain = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0")
    monkeypatch.setenv("JUMPSTARTER_HOST", plain.address)
    monkeypatch.delenv("JMP_GRPC_INSECURE", raising=False)
    with pytest.raises(ConnectError, match=f"no exporter answers at {plain.address} over TLS"):
        with env():
            pass
    monkeypatch.setenv("JMP_GRPC_INSECURE", "1")
    with env() as client:
        assert client.board.add(1, 1) == 2


def test_tls_exporter_and_client(exporter_process, tls_files, tmp_path):
    cert, key = tls_files
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key))
    with connect(exporter.address, tls=str(cert)) as root:  # the self-signed certificate is its own CA
        assert root.board.add(2, 3) == 5
        with root.board.stream("console") as console:
            console.send(b"sealed")
            assert console.receive() == b"sealed"
    with pytest.raises(ConnectError, match="over TLS"):  # not trusted by the system's CAs
        connect(exporter.address, tls=True, timeout=1)
    with pytest.raises(ConnectError) as plain:  # plain gRPC to a TLS exporter: the hint says TLS
        connect(exporter.address, timeout=1)
    assert f"no exporter answers at {exporter.address} in plain gRPC, though something listens there: if it " in str(
        plain.value
    )
    assert "pytest --exporter-tls" in str(plain.value)
    with pytest.raises(ConnectError, match=r"no exporter answers at 127.0.0.1:1 \(waited"):  # nothing there at all
        connect("127.0.0.1:1", timeout=0.5)
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("hello")
    done = subprocess.run(
        [sys.executable, "-m", "jumpstarter", "run", str(BOARD_YAML), "--listen", "127.0.0.1:0"]
        + ["--tls-cert", str(not_pem), "--tls-key", str(key)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and f"--tls-cert {not_pem}: not a PEM file" in done.stderr


def test_version_and_a_port_alone_in_listen():
    from importlib.metadata import version

    done = subprocess.run([sys.executable, "-m", "jumpstarter", "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, f"jumpstarter {version('jumpstarter')}\n")
    done = subprocess.run(
        [sys.executable, "-m", "jumpstarter", "run", str(BOARD_YAML), "--listen", "7777"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--listen 7777: give HOST:PORT, e.g. 127.0.0.1:7777" in done.stderr and "add_port" not in done.stderr


def test_serving_the_network_without_passphrase_or_tls_warns(exporter_process):
    open_to_all = exporter_process(BOARD_YAML, "--listen", "0.0.0.0:0")
    warning = "warning: serving every driver at 0.0.0.0:0 to anyone who can reach it: no --passphrase"
    assert warning in open_to_all.output()
    loopback = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0")
    guarded = exporter_process(BOARD_YAML, "--listen", "0.0.0.0:0", "--passphrase", "pw")
    assert "warning" not in loopback.output() + guarded.output()
    # Each prints the tree it serves: the exports, their children, their driver classes.
    assert (
        "jumpstarter: exports:\n  board: jumpstarter_driver_demo.Board\n    power: jumpstarter_driver_demo.Power\n"
        in (loopback.output())
    )


def test_j_lists_a_driver_without_a_cli_and_says_how_to_use_it(exporter_process):
    """`j --help` lists every export; `j board` of a client with no cli() says so, how to use it and its methods,
    instead of listing nothing and answering "No such command"."""
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0")
    shell = [sys.executable, "-m", "jumpstarter", "shell", exporter.address, "--", sys.executable, "-m"]

    def j(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*shell, "jumpstarter.j", *args], capture_output=True, text=True, timeout=60)

    listing = j("--help")
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"^  board +\(no command-line interface: use it from Python; exports add, ", listing.stdout, re.M)
    for args in (["board"], ["board", "on", "--now"]):
        done = j(*args)
        assert done.returncode == 2, done.stdout + done.stderr
        message = " ".join(done.stderr.split())
        assert (
            "'board' has no command-line interface: its client class jumpstarter_driver_demo.client.BoardClient"
            " has no cli(). Use it from Python" in message
        ), done.stderr
        assert "client.children['board'].METHOD(...)" in message and "Its driver exports: add, " in message
        assert "No such command" not in done.stderr and "Traceback" not in done.stderr
