"""Which board, not which test: health checks take a sick board out of the run; a failing test is retried on other
boards, and the run says whether the failure was the code's, a board's, or flaky. Real exporters of a Unit driver
whose YAML makes a board sick, flaky or crash (samples.UNIT_DRIVER), in whole pytest runs."""

from __future__ import annotations

import re
import textwrap

import pytest
from samples import UNIT_DRIVER, unit_yaml

from jumpstarter.client import connect
from jumpstarter.client.lease import lease_records

HEALTH_CHECK = """
    import pytest

    @pytest.mark.jumpstarter_health
    def test_power(unit):
        assert unit.call("power_ok"), "power rail low"
"""
WORK = "".join(f"def test_work_{i}(unit):\n    assert unit.call('work')\n\n" for i in range(6))


def exporters(pytester: pytest.Pytester, *units: tuple, labels: dict | None = None) -> list[str]:
    """--exporter arguments for YAML Units (name, faults), started by the plugin, the driver beside them;
    ``labels``: board name -> its labels."""
    pytester.makepyfile(unit=UNIT_DRIVER)
    paths = [unit_yaml(pytester.path, name, (labels or {}).get(name), **faults) for name, faults in units]
    return [arg for path in paths for arg in ("--exporter", str(path))]


def run(pytester: pytest.Pytester, *args: str, timeout: float = 180) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", *args, timeout=timeout)


def summary_row(result: pytest.RunResult, board: str) -> list[str]:
    row = next(line for line in result.outlines if re.match(rf"{board}\s+\d", line))
    return row.split()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_sick_board_is_taken_out_and_its_tests_go_to_the_others(pytester, workers):
    args = exporters(pytester, ("b0", {}), ("b1", {"sick": True}), ("b2", {}))
    pytester.makepyfile(test_health=HEALTH_CHECK, test_work=WORK)
    result = run(pytester, "-n", workers, *args)
    # Every test passed (work() fails on b1: none ran there); b0's and b2's checks passed, b1's is "sick".
    result.assert_outcomes(passed=6 + 2)
    assert result.parseoutcomes()["sick"] == 1
    assert result.ret == 0, "a sick board doesn't fail the run: its tests went elsewhere"
    result.stdout.fnmatch_lines(
        ["jumpstarter: b1 is out of the run: its health check test_health.py::test_power?b1? failed: *power rail low*"]
    )
    assert summary_row(result, "b1")[1:2] == ["0"], "no test ran on b1"
    assert summary_row(result, "b1")[-1] == "out"
    assert summary_row(result, "b0")[-1] == "ok"


def test_the_timeline_shows_health_checks_in_their_own_colour(pytester):
    args = exporters(pytester, ("b0", {}), ("b1", {"sick": True}))
    pytester.makepyfile(test_health=HEALTH_CHECK, test_work=WORK)
    result = run(pytester, *args, "--jumpstarter-timeline", "lab.html")
    result.assert_outcomes(passed=7)
    page = (pytester.path / "lab.html").read_text()
    assert 'data-test="test_health.py::test_power[b1]" data-outcome="sick"' in page
    assert 'data-test="test_health.py::test_power[b0]" data-outcome="health"' in page
    assert "b1 out of the run: its health check test_health.py::test_power[b1] failed" in page


def test_when_every_board_is_sick_the_tests_fail_naming_them(pytester):
    args = exporters(pytester, ("b0", {"sick": True}), ("b1", {"sick": True}))
    pytester.makepyfile(test_health=HEALTH_CHECK, test_work=WORK)
    result = run(pytester, *args)
    result.assert_outcomes(errors=6)
    assert result.parseoutcomes()["sick"] == 2
    result.stdout.fnmatch_lines(
        [
            "*no exporter left for export 'unit': b0 is out of the run: its health check test_health.py::test_power?b0?"
            " failed: *power rail low*; b1 is out of the run: *"
        ]
    )


def test_a_health_check_that_hangs_is_cut_off_by_the_call_timeout(pytester):
    args = exporters(pytester, ("b0", {}), ("b1", {"sick": True}))
    pytester.makepyfile(
        test_health="""
        import pytest

        @pytest.mark.jumpstarter_health
        @pytest.mark.jumpstarter(call_timeout=2)
        def test_responds(unit):
            if not unit.call("power_ok"):
                unit.call("hang", 15)  # a board that never answers
        """,
        test_work=WORK,
    )
    result = run(pytester, *args)
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["jumpstarter: b1 is out of the run: *test_responds?b1? failed: *call timeout of 2 s*"])


def test_a_health_check_that_errors_in_set_up_takes_every_board_out(pytester):
    """A check that can't even start says nothing good of any board: loud, not silently skipped."""
    args = exporters(pytester, ("b0", {}), ("b1", {}))
    pytester.makepyfile(
        test_health="""
        import pytest

        @pytest.fixture
        def probe():
            raise OSError("no probe cable")

        @pytest.mark.jumpstarter_health
        def test_probe(unit, probe):
            pass
        """,
        test_work=WORK,
    )
    result = run(pytester, *args)
    result.assert_outcomes(errors=6)
    result.stdout.fnmatch_lines(
        ["*b0 is out of the run: its health check *test_probe?b0? errored in setup: *no probe*"]
    )


def test_a_health_check_named_in_the_ini_file(pytester):
    args = exporters(pytester, ("b0", {}), ("b1", {"sick": True}))
    pytester.makeini("[pytest]\njumpstarter_health_checks = checks/test_board.py::test_power\n")
    (pytester.path / "checks").mkdir()
    (pytester.path / "checks" / "test_board.py").write_text(
        textwrap.dedent(HEALTH_CHECK).replace("@pytest.mark.jumpstarter_health", "")
    )
    pytester.makepyfile(test_work=WORK)
    result = run(pytester, *args, ".", "-k", "work")  # -k doesn't deselect a board's checks
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["jumpstarter: b1 is out of the run: *checks/test_board.py::test_power?b1? failed*"])

    pytester.makeini("[pytest]\njumpstarter_health_checks = checks/test_board.py::test_typo\n")
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*health check checks/test_board.py::test_typo (ini jumpstarter_health_checks) was not*"]
    )


# Retry elsewhere --------------------------------------------------------------------------------------------------

# Three boards: "sick" fits tests with a=1, "flaky" those with b=1, "good" both; the first in the lab's order is tried
# first (one process, no xdist).
CLASSIFIED = """
    import pytest

    @pytest.mark.exporter(a="1")
    def test_board(unit):
        assert unit.call("work")

    @pytest.mark.exporter(b="1")
    def test_flaky(unit):
        assert unit.call("work")

    def test_code(unit):
        assert unit.call("power_ok") and 1 + 1 == 3
"""


def test_retry_elsewhere_tells_the_code_from_a_board_from_a_flaky_test(pytester):
    flaky = str(pytester.path / "flaky.count")
    labels = {"sick": {"a": "1"}, "flaky": {"b": "1"}, "good": {"a": "1", "b": "1"}}
    args = exporters(pytester, ("sick", {"sick": True}), ("flaky", {"flaky": flaky}), ("good", {}), labels=labels)
    pytester.makepyfile(test_it=CLASSIFIED)
    result = run(pytester, *args, "--jumpstarter-retry-elsewhere", "2", "-v")
    result.assert_outcomes(passed=2, failed=1)
    outcomes = result.parseoutcomes()
    # test_board: failed on sick, passed on good, failed on sick again (check-back); test_flaky: failed on flaky,
    # passed on good, passed on flaky (check-back); test_code: failed on all three.
    assert outcomes["retried"] == 2 + 2 + 2
    result.stdout.fnmatch_lines(
        [
            "*jumpstarter: retried on other boards*",
            "test_it.py::test_board: failed on sick, passed on good: the board",
            "test_it.py::test_flaky: failed on flaky, passed on good, and on flaky again: flaky",
            "test_it.py::test_code: fails everywhere (on sick, flaky, good): the code",
            "*jumpstarter: board suspects*",
            "sick: 1 test(s) failed there and passed on another board:",
            "  test_it.py::test_board: failed on sick, passed on good: the board (*no answer on the serial console)",
        ]
    )
    assert "flaky: 1 test(s)" not in result.stdout.str(), "a flaky test's board is no suspect"


def test_retry_elsewhere_under_xdist(pytester):
    args = exporters(pytester, ("sick", {"sick": True}), ("good", {}))
    pytester.makepyfile(test_work=WORK)
    result = run(pytester, "-n", "2", *args, "--jumpstarter-retry-elsewhere", "1")
    result.assert_outcomes(passed=6)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*jumpstarter: board suspects*", "sick: * test(s) failed there and passed on*"])
    assert summary_row(result, "good")[-1] == "0"  # its failures column


def test_no_retry_where_only_one_board_fits_nor_in_matrix_mode(pytester):
    args = exporters(pytester, ("sick", {"sick": True}), ("good", {}), labels={"sick": {"only": "1"}})
    pytester.makepyfile(
        test_it="""
        import pytest

        @pytest.mark.exporter(only="1")
        def test_only_on_sick(unit):
            unit.call("work")
        """
    )
    result = run(pytester, *args, "--jumpstarter-retry-elsewhere", "3")
    result.assert_outcomes(failed=1)
    assert "retried" not in result.parseoutcomes()

    pytester.makepyfile(test_it=WORK.split("\n\n")[0] + "\n")
    result = run(pytester, *args, "--jumpstarter-retry-elsewhere", "3", "--exporter-matrix")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*--jumpstarter-retry-elsewhere 3 does nothing with --exporter-matrix*"])


def test_a_bad_retry_count_is_a_usage_error(pytester):
    args = exporters(pytester, ("good", {}))
    pytester.makepyfile(test_work=WORK)
    result = run(pytester, *args, "--jumpstarter-retry-elsewhere", "many")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*retry elsewhere 'many' (command line) is not a whole number >= 0*"])


def test_an_exporter_that_dies_during_a_retry(pytester):
    """Failed on a, its retry crashed b's exporter, passed on c: b is a suspect, gone, and the run goes on."""
    args = exporters(pytester, ("a", {"sick": True}), ("b", {"crash": True}), ("c", {}))
    pytester.makepyfile(test_work=WORK.split("\n\n")[0] + "\n")
    result = run(pytester, *args, "--jumpstarter-retry-elsewhere", "2")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["b gone at *died*", "test_work.py::test_work_0: failed on a, b, passed on c: the board"]
    )


def test_ctrl_c_during_a_retry_leaves_no_lease_held(pytester, exporter_process):
    pytester.makepyfile(unit=UNIT_DRIVER)
    env = {"PYTHONPATH": str(pytester.path)}
    addresses = [
        exporter_process(
            unit_yaml(pytester.path, name), "--listen", f"unix://{pytester.path / name}.sock", env=env
        ).address
        for name in ("a", "b")
    ]
    flag = pytester.path / "tried"
    pytester.makepyfile(
        test_it=f"""
        import os

        def test_interrupted(unit):
            unit.call("work")
            if os.path.exists({str(flag)!r}):
                raise KeyboardInterrupt
            open({str(flag)!r}, "w").close()
            assert False, "first try"
        """
    )
    result = run(
        pytester, *[a for address in addresses for a in ("--exporter", address)], "--jumpstarter-retry-elsewhere", "1"
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    leases = []
    for address in addresses:
        with connect(address, trusted=frozenset({"jumpstarter.client.DriverClient"})) as client:
            leases += lease_records(client.connection)
    assert len(leases) == 2, "one try on each board"
    assert {r.ended for r in leases} == {"released"}


def test_a_checked_boards_check_in_its_turn_of_the_schedule_leaves_the_next_module_set_up_right(pytester):
    """The schedule reaches b0's check after b0's first test had it run: its turn does nothing, and the next module
    (a module-scoped fixture of its own) sets up as usual."""
    args = exporters(pytester, ("b0", {}))
    pytester.makepyfile(
        test_a_work=WORK + textwrap.dedent(HEALTH_CHECK),
        test_c_more="""
        import pytest

        @pytest.fixture(scope="module")
        def image():
            return "v1"

        def test_more(image):
            assert image == "v1"  # no board: a test the plugin leaves to pytest
        """,
    )
    result = run(pytester, *args)
    result.assert_outcomes(passed=6 + 1 + 1)
