"""Wire compatibility with upstream Jumpstarter 0.9.0, both ways, against upstream's own packages.

scripts/setup-upstream.sh installs upstream (and the same example driver packages that our side
has) into a virtualenv of its own, reused between runs. A machine where that can't be done fails
these tests with the reason; they are never skipped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import upstream_peer as peer
from samples import leased
from upstream_peer import CUSTOM_YAML, HERE, PeerError

from jumpstarter.client import connect
from jumpstarter.client.connection import Connection

UPLOAD = bytes(range(256)) * 4000  # what tests/upstream/upstream_client.py uploads
SHELL_TIMEOUT = 60  # one `jmp shell` run takes about 1.5 s here, with our pytest inside about 4 s


@pytest.fixture(scope="session")
def upstream(say) -> Path:
    """The bin directory of upstream Jumpstarter's virtualenv (set up on the first run, saying so)."""
    try:
        return peer.install_upstream(progress=say)
    except PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


@contextmanager
def upstream_exporter(
    bin_dir: Path, log: Path, *extra: str, tls: tuple[Path, Path] | None = None, config: Path = CUSTOM_YAML
) -> Iterator[str]:
    """Upstream's `jmp run` serving ``config`` (tests/upstream/custom.yaml); yields its address."""
    try:
        with peer.upstream_exporter(bin_dir, log, *extra, tls=tls, config=config) as address:
            yield address
    except PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


def jmp_shell(
    bin_dir: Path, address: str, *extra: str, cwd: Path, command: list | None = None, tls_ca: Path | None = None
) -> subprocess.CompletedProcess:
    """Run ``command`` (default: tests/upstream/upstream_client.py under upstream's python) in upstream's
    `jmp shell`, connected to ``address``."""
    command = command or [bin_dir / "python", HERE / "upstream_client.py"]
    try:
        return peer.jmp_shell(bin_dir, address, command, *extra, cwd=cwd, timeout=SHELL_TIMEOUT, tls_ca=tls_ca)
    except PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


def our_shell(*options: str | Path, command: list, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command`` under our `jumpstarter shell OPTIONS` (the exporter's address among them)."""
    args = [sys.executable, "-m", "jumpstarter", "shell", *options, "--", *command]
    try:
        return peer.run_group(args, env=peer.peer_env(), cwd=cwd, timeout=SHELL_TIMEOUT)
    except PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


def results_of(shell: subprocess.CompletedProcess) -> dict:
    lines = [line for line in shell.stdout.splitlines() if line.startswith("RESULTS ")]
    assert shell.returncode == 0 and lines, f"jmp shell exited with {shell.returncode}:\n{shell.stdout}{shell.stderr}"
    return json.loads(lines[-1].removeprefix("RESULTS "))


# Upstream's client -> our exporter -----------------------------------------------------------------


def assert_upstream_saw_our_drivers(results: dict) -> None:
    assert results["client"] == "jumpstarter_driver_composite.client.CompositeClient"
    assert results["children"] == ["board", "custom", "dut-power"]
    assert results["board_client"] == "jumpstarter_driver_demo.client.BoardClient"  # the same driver package
    assert results["plain"] == {"value": "hello\n"}
    assert results["big_text"] == {"value": True}
    assert results["describe"] == {"value": {"name": "demo-1", "baudrate": 9600}}
    assert results["async"] == {"value": 0.01}
    assert results["generator"] == {"value": [0, 1, 2]}
    assert results["async_generator"] == {"value": [0, 1, 2]}
    assert results["stream"] == {"value": {"echoed": ["ping", "\x00\xffbinary"], "ended": True}}
    assert results["child"] == {"value": True}
    assert results["proxy"] == {"value": False}  # switched off through dut-power, read through board.power
    uploaded = {"value": {"size": len(UPLOAD), "sha256": hashlib.sha256(UPLOAD).hexdigest()}}
    assert results["upload"] == results["upload_gzip"] == uploaded  # gzip: decompressed by the client
    assert results["after_errors"] == {"value": 2}


def test_upstream_client_calls_our_exporter(upstream, exporter_process, tmp_path):
    ours = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0")
    shell = jmp_shell(upstream, ours.address, "--exporter-logs", cwd=tmp_path)
    results = results_of(shell)
    assert_upstream_saw_our_drivers(results)
    assert "[exporter:driver] power on" in shell.stdout + shell.stderr  # our LogStream, shown by upstream

    # Upstream's client ignores where the integers stood: it sees floats, equal in value (JSON keeps the kind).
    assert results["add"] == {"value": 5} and type(results["add"]["value"]) is float
    assert results["echo_int"] == {"value": 20000} and type(results["echo_int"]["value"]) is float

    # Every failure reaches upstream as the kind upstream's client knows it by, with the driver's message.
    def failure(key: str) -> tuple[str, str]:
        outcome = results[key]
        assert "value" not in outcome, f"{key}: expected an error, got {outcome}"
        return outcome["error"], outcome["message"]

    error, message = failure("raises_value")
    assert error == "DriverInvalidArgument" and "ValueError" in results["raises_value"]["bases"]
    assert message.endswith("INVALID_ARGUMENT: value boom")
    error, message = failure("raises_notimplemented")
    assert error == "DriverMethodNotImplemented" and "NotImplementedError" in results["raises_notimplemented"]["bases"]
    assert message.endswith("UNIMPLEMENTED: notimplemented boom")
    error, message = failure("raises_timeout")
    assert error == "DriverError" and "DEADLINE_EXCEEDED: timeout boom" in message
    error, message = failure("raises_other")
    assert error == "DriverError" and message.endswith("UNKNOWN: other boom")
    error, message = failure("not_found")
    assert error == "DriverMethodNotImplemented" and "NOT_FOUND" in message and "not_exported" in message


def test_upstream_client_with_passphrase(upstream, exporter_process, tmp_path):
    ours = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0", "--passphrase", "s3cret")
    assert_upstream_saw_our_drivers(
        results_of(jmp_shell(upstream, ours.address, "--passphrase", "s3cret", cwd=tmp_path))
    )
    for wrong in (["--passphrase", "wrong"], []):
        refused = jmp_shell(upstream, ours.address, *wrong, cwd=tmp_path)
        assert refused.returncode != 0
        assert "RESULTS" not in refused.stdout
        assert "Authentication failed: invalid or missing passphrase" in refused.stdout + refused.stderr


def test_upstream_client_is_refused_while_our_lease_is_held(upstream, exporter_process, tmp_path):
    ours = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0")
    connection = Connection(ours.address)
    try:
        with leased(connection, "ci@lab pid 7: tests/test_board.py::test_boot"):
            results = results_of(jmp_shell(upstream, ours.address, cwd=tmp_path))
    finally:
        connection.close()
    assert results["children"] == ["board", "custom", "dut-power"]  # looking is allowed
    holder = "exporter is leased by ci@lab pid 7: tests/test_board.py::test_boot since"
    for key in ("plain", "async", "generator", "child", "raises_value"):
        assert results[key]["error"] == "ExporterNotReady", key  # upstream's name for FAILED_PRECONDITION
        assert holder in results[key]["message"], key
    # A refused byte stream: upstream's client loses the reason and reports the ended call.
    assert results["stream"]["error"] == "InvalidStateError"


def test_upstream_client_inside_our_shell(upstream, exporter_process, tmp_path):
    """`jumpstarter shell` gives its command what upstream's `jmp shell` gives, so upstream's env() works in it."""
    ours = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0", "--passphrase", "s3cret")
    script = [upstream / "python", HERE / "upstream_client.py"]
    shell = our_shell(ours.address, "--passphrase", "s3cret", command=script, cwd=tmp_path)
    assert_upstream_saw_our_drivers(results_of(shell))
    refused = our_shell(ours.address, "--passphrase", "wrong", command=script, cwd=tmp_path)
    assert refused.returncode == 1 and "RESULTS" not in refused.stdout
    assert f"exporter at {ours.address} refused the passphrase" in refused.stderr


@pytest.mark.parametrize("exporter", ["ours", "upstream"])
def test_upstream_style_script_runs_unchanged_with_our_client(upstream, exporter_process, tmp_path, exporter):
    """The same script, under our python: our env() in our shell, against our exporter and upstream's."""
    script = [sys.executable, HERE / "upstream_client.py"]
    if exporter == "ours":
        ours = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0")
        results = results_of(our_shell(ours.address, command=script, cwd=tmp_path))
    else:
        with upstream_exporter(upstream, tmp_path / "jmp-run.log") as address:
            results = results_of(our_shell(address, command=script, cwd=tmp_path))
    assert results["client"] == "jumpstarter.client.base.CompositeClient"
    assert_upstream_saw_our_drivers({**results, "client": "jumpstarter_driver_composite.client.CompositeClient"})
    ints = exporter == "ours"  # exact between ours; floats, equal in value, from upstream's exporter
    assert type(results["add"]["value"]) is (int if ints else float) and results["add"]["value"] == 5
    kinds = {key: results[f"raises_{key}"]["error"] for key in ("value", "notimplemented", "timeout", "other")}
    assert kinds == {
        "value": "DriverInvalidArgument",
        "notimplemented": "DriverNotImplemented",
        "timeout": "DriverTimeout",
        "other": "DriverError",
    }
    assert results["not_found"]["error"] == "MethodNotFound"


@pytest.mark.parametrize("exporter", ["ours", "upstream"])
def test_our_pytest_inside_upstream_jmp_shell_tests_the_shells_exporter(upstream, exporter_process, pytester, exporter):
    """`jmp shell ... -- pytest`: with no --exporter, the plugin takes the shell's exporter and passphrase."""
    pytester.makepyfile(test_calls=(HERE / "calls_from_pytest.py").read_text())
    pytest_command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", pytester.path]
    if exporter == "ours":
        address = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0", "--passphrase", "pw").address
        shell = jmp_shell(upstream, address, "--passphrase", "pw", command=pytest_command, cwd=pytester.path)
    else:
        with upstream_exporter(upstream, pytester.path / "jmp-run.log", "--passphrase", "pw") as address:
            shell = jmp_shell(upstream, address, "--passphrase", "pw", command=pytest_command, cwd=pytester.path)
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert f"jumpstarter: exporters from env JUMPSTARTER_HOST (jmp shell):\n  {address}: custom, board" in shell.stdout
    assert f"{CALL_TESTS} passed" in shell.stdout


# Our client and pytest plugin -> upstream's exporter -------------------------------------------------


def run_calls(pytester, address: str, *args: str):
    pytester.makepyfile(test_calls=(HERE / "calls_from_pytest.py").read_text())
    return pytester.runpytest_subprocess("--exporter", address, "-p", "no:cacheprovider", *args)


CALL_TESTS = 14  # the tests in tests/upstream/calls_from_pytest.py


def test_our_plugin_calls_upstream_exporter(upstream, pytester, tmp_path):
    with upstream_exporter(upstream, tmp_path / "jmp-run.log") as address:
        run_calls(pytester, address).assert_outcomes(passed=CALL_TESTS)


def test_upstream_serves_the_readmes_example_yaml_as_written(upstream, tmp_path):
    """README: `jmp run --exporter-config custom.yaml ...` on examples/jumpstarter-custom-driver/custom.yaml."""
    example = Path(__file__).resolve().parents[1] / "examples" / "jumpstarter-custom-driver" / "custom.yaml"
    with upstream_exporter(upstream, tmp_path / "jmp-run.log", config=example) as address, connect(address) as exporter:
        assert exporter.custom.execute("echo", ["hi"]) == "hi\n"


def test_our_plugin_calls_upstream_exporter_with_passphrase(upstream, pytester, tmp_path):
    with upstream_exporter(upstream, tmp_path / "jmp-run.log", "--passphrase", "s3cret") as address:
        run_calls(pytester, address, "--exporter-passphrase", "s3cret").assert_outcomes(passed=CALL_TESTS)
        for wrong in (["--exporter-passphrase", "wrong"], []):
            refused = run_calls(pytester, address, *wrong)
            assert refused.ret == pytest.ExitCode.USAGE_ERROR
            refused.stderr.fnmatch_lines([f"*--exporter {address}: exporter at {address}*passphrase*"])


OVERLAP_TESTS = """
    import json, os, time

    import pytest

    @pytest.mark.parametrize("n", range(6))
    def test_hold_the_board(board, n):
        started = time.time()
        assert board.wait(0.2) == 0.2
        with open(os.environ["INTERVALS"], "a") as log:
            log.write(json.dumps([started, time.time()]) + "\\n")
"""


def test_parallel_workers_never_share_an_upstream_exporter(upstream, pytester, tmp_path, monkeypatch):
    """Upstream's exporter has no lease service: the workers of one machine take turns by lock file."""
    intervals = tmp_path / "intervals.jsonl"
    monkeypatch.setenv("INTERVALS", str(intervals))
    pytester.makepyfile(test_hold=OVERLAP_TESTS)
    with upstream_exporter(upstream, tmp_path / "jmp-run.log") as address:
        result = pytester.runpytest_subprocess("--exporter", address, "-n", "3", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    held = sorted(json.loads(line) for line in intervals.read_text().splitlines())
    assert len(held) == 6
    assert all(end <= next_start for (_, end), (next_start, _) in zip(held, held[1:], strict=False)), held


def test_the_same_calls_pass_against_our_exporter(pytester, exporter_process):
    ours = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0")
    run_calls(pytester, ours.address).assert_outcomes(passed=CALL_TESTS)


# TLS, both ways ----------------------------------------------------------------------------------


def test_upstream_client_speaks_tls_to_our_exporter(upstream, exporter_process, tls_files, tmp_path):
    cert, key = tls_files
    ours = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key))
    assert_upstream_saw_our_drivers(results_of(jmp_shell(upstream, ours.address, cwd=tmp_path, tls_ca=cert)))
    plain = jmp_shell(upstream, ours.address, cwd=tmp_path)  # --tls-grpc-insecure: plain gRPC gets nowhere
    assert plain.returncode != 0 and "RESULTS" not in plain.stdout


def test_our_plugin_speaks_tls_to_upstream_exporter(upstream, pytester, tls_files, tmp_path):
    cert, key = tls_files
    with upstream_exporter(upstream, tmp_path / "jmp-run.log", "--passphrase", "pw", tls=(cert, key)) as address:
        passphrase = ("--exporter-passphrase", "pw")
        run_calls(pytester, address, "--exporter-tls", str(cert), *passphrase).assert_outcomes(passed=CALL_TESTS)
        plain = run_calls(pytester, address, *passphrase)
        assert plain.ret == pytest.ExitCode.USAGE_ERROR
        plain.stderr.fnmatch_lines([f"*--exporter {address}: *no exporter answers at {address}*"])
        # Inside upstream's TLS `jmp shell`, our pytest speaks TLS to the shell's exporter by itself.
        pytest_command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", pytester.path]
        shell = jmp_shell(upstream, address, "--passphrase", "pw", command=pytest_command, cwd=tmp_path, tls_ca=cert)
        assert shell.returncode == 0 and f"{CALL_TESTS} passed" in shell.stdout, shell.stdout + shell.stderr


def test_upstream_client_inside_our_tls_shell(upstream, tls_files, tmp_path):
    """`jumpstarter shell --tls-grpc A --tls-ca F`: both clients inside trust F, upstream's included."""
    cert, key = tls_files
    with upstream_exporter(upstream, tmp_path / "jmp-run.log", tls=(cert, key)) as address:
        script = [upstream / "python", HERE / "upstream_client.py"]
        results = results_of(our_shell("--tls-grpc", address, "--tls-ca", cert, command=script, cwd=tmp_path))
    assert results["plain"] == {"value": "hello\n"} and results["stream"]["value"]["ended"] is True


# The wire, side by side ---------------------------------------------------------------------------


def _report(address: str):
    connection = Connection(address)
    try:
        connection.wait_ready(5)
        return connection.report()
    finally:
        connection.close()


def _tree(report) -> list[tuple[str, dict[str, str], str | None]]:
    """GetReport as (path, labels, parent's path) per driver, uuids aside; the root's path is ""."""
    paths: dict[str, str] = {}
    tree = []
    for driver in report.reports:
        name = driver.labels.get("jumpstarter.dev/name", "")
        parent = paths.get(driver.parent_uuid, "") if driver.HasField("parent_uuid") else None
        paths[driver.uuid] = f"{parent}.{name}".lstrip(".") if parent is not None else ""
        tree.append((paths[driver.uuid], dict(driver.labels), parent))
    return tree


def test_driver_tree_reports_agree(upstream, exporter_process, tmp_path):
    ours = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0")
    with upstream_exporter(upstream, tmp_path / "jmp-run.log") as address:
        theirs = _report(address)
    mine = _report(ours.address)
    assert _tree(mine) == _tree(theirs)
    # The proxy dut-power: board.power reported again, under the root, with its name (the uuid is the same).
    assert [path for path, _, _ in _tree(theirs)] == ["", "custom", "board", "board.power", "dut-power"]
    assert mine.reports[4].uuid == mine.reports[3].uuid and theirs.reports[4].uuid == theirs.reports[3].uuid
    # Descriptions from the YAML, as upstream serves them; ours adds docstrings for the methods the YAML leaves out.
    assert [d.description for d in mine.reports] == [d.description for d in theirs.reports]
    assert theirs.reports[1].description == "runs commands on the exporter host"
    for my_driver, their_driver in zip(mine.reports, theirs.reports, strict=True):
        assert dict(their_driver.methods_description).items() <= dict(my_driver.methods_description).items()
    assert theirs.reports[1].methods_description["execute"].startswith("Run a command")
    assert mine.reports[2].methods_description["echo"] == "Return the value as it arrived."


def test_integers_exact_between_ours_and_floats_from_upstream(upstream, exporter_process, tmp_path):
    ours = exporter_process(CUSTOM_YAML, "--listen", "127.0.0.1:0")
    value = {"count": 20000, "ratio": 0.5, "ids": [1, 2, 3], "big": 2**53}
    with connect(ours.address) as exporter:
        assert _kinds(exporter.board.echo(value)) == _kinds(value)  # ints stay ints, floats floats
        assert type(exporter.board.add(2, 3)) is int
    with upstream_exporter(upstream, tmp_path / "jmp-run.log") as address, connect(address) as exporter:
        echoed = exporter.board.echo(value)
        assert echoed == value  # equal in value: nothing is lost or corrupted
        assert type(echoed["count"]) is float and type(echoed["ratio"]) is float  # upstream sends doubles
        assert type(exporter.board.add(2, 3)) is float


def _kinds(value):
    if isinstance(value, dict):
        return {k: _kinds(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_kinds(v) for v in value]
    return (type(value).__name__, value)


def test_setup_failure_is_reported_with_its_reason(tmp_path):
    with pytest.raises(PeerError, match=r"(?s)can't set up upstream Jumpstarter in .*exited with"):
        peer.install_upstream(tmp_path / "venv", env={"PYTHON": str(tmp_path / "no-such-python")})


def test_upstream_is_the_pinned_release(upstream):
    shown = subprocess.run(
        [str(upstream / "python"), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    versions = {p["name"].lower(): p["version"] for p in json.loads(shown.stdout)}
    for name in ("jumpstarter", "jumpstarter-cli", "jumpstarter-driver-composite"):
        assert versions.get(name) == "0.9.0", name
    assert "jumpstarter-custom-driver" in versions and "jumpstarter-driver-demo" in versions
    assert shutil.which("jmp", path=str(upstream))
