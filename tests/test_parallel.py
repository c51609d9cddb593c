"""Tests spread over exporters with pytest-xdist, never two on one board: checked from the exporters' records."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from samples import CRASHY_DRIVER, exporter_yaml

from jumpstarter.client import connect
from jumpstarter.client.lease import lease_records

BOARD = "jumpstarter_driver_demo.Board"
TRUSTED = frozenset({"jumpstarter_driver_demo.client.BoardClient"})


def board_yaml(folder: Path, name: str, export: str = "board", labels: dict[str, str] | None = None) -> Path:
    """An ExporterConfig of one demo Board named ``name`` under ``export``."""
    return exporter_yaml(folder / f"{name}.yaml", {export: BOARD}, name=name, labels=labels, config=f"name: {name}")


@pytest.fixture
def lab(exporter_process, tmp_path):
    """Start ``n`` running exporters (b0, b1, ...) on unix sockets; returns their addresses."""

    def start(n: int) -> list[str]:
        return [
            exporter_process(board_yaml(tmp_path, f"b{i}"), "--listen", f"unix://{tmp_path / f'b{i}.sock'}").address
            for i in range(n)
        ]

    return start


def records(address: str):
    with connect(address, trusted=TRUSTED) as client:
        return lease_records(client.connection)


def overlaps(leases) -> list:
    spans = sorted((r.granted, r.released or math.inf, r.holder) for r in leases)
    return [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]


def exporter_args(addresses: list[str]) -> list[str]:
    return [arg for address in addresses for arg in ("--exporter", address)]


def slow_tests(numbers: range, seconds: float = 0.2) -> str:
    """Tests that each hold the board ``seconds``."""
    return "".join(f"def test_{i}(board):\n    assert board.wait({seconds}) == {seconds}\n\n" for i in numbers)


SLOW_TESTS = slow_tests(range(8))


def test_xdist_spreads_tests_over_exporters_and_never_overlaps(pytester, lab):
    addresses = lab(2)
    pytester.makepyfile(test_slow=SLOW_TESTS)
    result = pytester.runpytest_subprocess("-n", "2", *exporter_args(addresses))
    result.assert_outcomes(passed=8)
    per_exporter = [records(a) for a in addresses]
    assert sum(len(r) for r in per_exporter) == 8  # one lease per test
    assert all(per_exporter), "both exporters were used"
    assert [overlaps(r) for r in per_exporter] == [[], []]
    assert {r.ended for r in per_exporter[0] + per_exporter[1]} == {"released"}


def test_workers_sharing_one_board_take_turns(pytester, lab):
    """A worker keeps the board between its tests only until another asks: then the board goes to the one who
    waited, turn about, instead of back to the worker that just released it."""
    (address,) = lab(1)
    # Four tests for each worker (a file each, --dist loadfile), both up before either's first test, each test long
    # enough for the other worker to ask meanwhile even on a loaded machine: otherwise xdist may hand most tests to
    # the worker that holds the board, or one worker may be late, and the other rightly keeps the board while
    # nobody else asks.
    pytester.makepyfile(test_a=slow_tests(range(4), 0.5), test_b=slow_tests(range(4, 8), 0.5))
    pytester.makeconftest(
        """
        import os, pathlib, time
        import pytest

        @pytest.fixture(scope="session", autouse=True)
        def both_workers_up():
            here = pathlib.Path(__file__).parent
            (here / f"up-{os.environ['PYTEST_XDIST_WORKER']}").touch()
            deadline = time.monotonic() + 60
            while len(list(here.glob("up-gw*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadfile", "--exporter", address)
    result.assert_outcomes(passed=8)
    leases = sorted(records(address), key=lambda r: r.granted)
    assert len(leases) == 8 and overlaps(leases) == []  # a record per test, even of the tests of a kept lease
    workers = [r.holder.split(": ")[0].rsplit(" ", 1)[-1] for r in leases]
    turns = sum(a != b for a, b in zip(workers, workers[1:], strict=False))
    assert set(workers) == {"gw0", "gw1"} and turns >= 5, workers


def test_two_concurrent_runs_share_two_exporters_without_overlap(pytester, lab):
    addresses = lab(2)
    pytester.makepyfile(test_slow=SLOW_TESTS)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", *exporter_args(addresses)]
    runs = [subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    leases = [r for a in addresses for r in records(a)]
    assert len(leases) == 16
    assert [overlaps(records(a)) for a in addresses] == [[], []]
    assert len({r.holder.split(" gw")[0] for r in leases}) == 4  # the two workers of each run held leases


def test_yaml_exporters_are_started_once_by_the_controlling_process(pytester):
    pytester.makepyfile(
        started_driver="""
            import os
            from dataclasses import dataclass
            from jumpstarter.driver import Driver, export

            @dataclass(kw_only=True)
            class Started(Driver):
                log: str

                def __post_init__(self):
                    super().__post_init__()
                    with open(self.log, "a") as f:
                        f.write(f"{os.getpid()}\\n")

                @classmethod
                def client(cls):
                    return "jumpstarter.client.DriverClient"

                @export
                def pid(self):
                    return os.getpid()
        """,
        test_it="".join(f"def test_{i}(dut):\n    assert dut.call('pid') > 0\n\n" for i in range(6)),
    )
    log = pytester.path / "starts.log"
    configs = []
    for name in ("one", "two"):
        path = exporter_yaml(pytester.path / f"{name}.yaml", {"dut": "started_driver.Started"}, config=f"log: {log}")
        configs += ["--exporter", str(path)]
    result = pytester.runpytest_subprocess("-n", "3", *configs)
    result.assert_outcomes(passed=6)
    assert len(log.read_text().split()) == 2  # one start per exporter, not one per worker


def test_waiting_is_shown_and_times_out_naming_the_holder(pytester, lab):
    (address,) = lab(1)
    pytester.makepyfile(
        """
        import time
        import pytest

        @pytest.fixture
        def later():
            time.sleep(0.5)  # let test_holder take the board first

        def test_holder(board):
            board.wait(3)

        @pytest.mark.jumpstarter(lease_timeout=1)
        def test_impatient(later, board):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--exporter", address, "--lease-timeout", "60")
    result.assert_outcomes(passed=1, errors=1)
    holder = (
        "*b0 leased by *@* pid * gw*: test_waiting_is_shown_and_times_out_naming_the_holder.py::test_holder since *"
    )
    result.stderr.fnmatch_lines([f"*jumpstarter: waiting for export 'board': {holder}"])
    result.stdout.fnmatch_lines([f"*jumpstarter: waited 1 s for export 'board': {holder}"])


def test_labels_pick_exporters_and_a_test_gets_two_boards(pytester, tmp_path):
    rpi = board_yaml(tmp_path, "rpi", labels={"board": "rpi4"})
    pi5 = board_yaml(tmp_path, "pi5", labels={"board": "pi5"})
    peer = board_yaml(tmp_path, "peer", export="peer", labels={"board": "rpi4"})
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.exporter(board="pi5")
        def test_pi5(board):
            assert board.describe()["name"] == "pi5"

        @pytest.mark.exporter("board", board="rpi4")
        def test_link(board, peer):
            assert (board.describe()["name"], peer.describe()["name"]) == ("rpi", "peer")

        @pytest.mark.exporter(board="pi9")
        def test_no_such_board(board):
            pass
        """
    )
    args = ["--exporter", str(rpi), "--exporter", str(pi5), "--exporter", str(peer)]
    result = pytester.runpytest_subprocess(*args, "--exporter-mode", "inprocess")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*no exporter provides export 'board' with board=pi9 (exporters: rpi (board=rpi4): board; pi5 *"]
    )


def test_matrix_mode_runs_each_test_on_every_exporter(pytester, lab):
    addresses = lab(3)
    pytester.makepyfile(
        """
        def test_named(board):
            assert board.describe()["name"] in ("b0", "b1", "b2")

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-n", "auto", "-v", "--exporter-matrix", *exporter_args(addresses))
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*3 workers*"])  # -n auto: one worker per exporter
    for i, address in enumerate(addresses):
        result.stdout.fnmatch_lines([f"*PASSED *::test_named[[]b{i}[]]*"])
        assert [r.holder.rsplit("::", 1)[-1] for r in records(address)] == [f"test_named[b{i}]"]


def test_module_lease_scope_keeps_one_lease_for_a_module(pytester, lab):
    (address,) = lab(1)
    pytester.makepyfile(
        test_flash="""
            import pytest

            @pytest.fixture(scope="module")
            def flashed(board):
                return board.echo("image-1")

            def test_a(flashed, board):
                assert flashed == "image-1"

            def test_b(flashed, board):
                assert board.add(1, 1) == 2
        """,
        test_other="def test_c(board):\n    pass\n",
    )
    result = pytester.runpytest_subprocess("--lease-scope", "module", "--exporter", address)
    result.assert_outcomes(passed=3)
    assert [r.holder.rsplit(": ", 1)[-1] for r in records(address)] == ["test_flash.py", "test_other.py"]


def test_a_worker_killed_mid_test_frees_its_lease(pytester, lab):
    (address,) = lab(1)
    killed = (
        "import os, signal\n\ndef test_0_killed(board):\n    board.echo(1)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    pytester.makepyfile(killed + "".join(f"\ndef test_{i}(board):\n    board.wait(0.1)\n" for i in range(1, 5)))
    result = pytester.runpytest_subprocess("-n", "2", "--exporter", address, "--lease-timeout", "30", timeout=90)
    result.assert_outcomes(passed=4, failed=1)
    leases = records(address)
    assert [r.ended for r in leases].count("holder vanished") == 1
    assert overlaps(leases) == []


def test_an_exporter_dying_mid_run_fails_only_the_tests_that_need_it(pytester):
    pytester.makepyfile(
        crashy_driver=CRASHY_DRIVER,
        test_it="""
            import pytest
            from jumpstarter.errors import JumpstarterError

            @pytest.mark.exporter(unit="a")
            def test_1_crash_a(dut):
                with pytest.raises(JumpstarterError):
                    dut.call("crash")

            @pytest.mark.exporter(unit="a")
            def test_2_needs_a(dut):
                dut.call("ping")

            def test_3_any(dut):
                assert dut.call("ping") == "pong"

            def test_4_any(dut):
                assert dut.call("ping") == "pong"
        """,
    )
    configs = []
    for unit in ("a", "b"):
        path = exporter_yaml(pytester.path / f"{unit}.yaml", {"dut": "crashy_driver.Crashy"}, labels={"unit": unit})
        configs += ["--exporter", str(path)]
    result = pytester.runpytest_subprocess("-n", "1", *configs, timeout=150)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*no exporter left for export 'dut' with unit=a: exporter a* can't be reached*"])
    assert result.duration < 90  # not waiting out a timeout (calls 900 s, leases minutes); ~5 s on a quiet machine


def test_after_a_call_timeout_the_next_test_waits_until_the_board_has_returned_from_the_call(pytester, lab):
    """A sync driver method can't be stopped: test_b got the board while test_a's timed-out call still ran."""
    (address,) = lab(1)
    pytester.makepyfile(
        test_order="""
        def test_a(board):
            board.call("block", 6)

        def test_b(board):
            assert board.echo("b") == "b"
        """
    )
    result = pytester.runpytest_subprocess("--exporter", address, "--call-timeout", "2", timeout=120)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*no answer within the call timeout of 2 s*"])
    a, b = (next(r for r in records(address) if r.holder.endswith(test)) for test in ("::test_a", "::test_b"))
    assert b.granted - a.granted >= 6  # test_b's lease began after the 6 s call had returned
