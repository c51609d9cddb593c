"""What a run with health checks and retries tells the world: one junit testcase per test with the honest outcome,
progress within 100%, checks a conftest names in code, and after a failed test on two boards, the sick one named.
Real exporters of a Unit driver (samples.UNIT_DRIVER, or a fragile one here) in whole pytest runs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from samples import exporter_yaml
from test_board_health import CLASSIFIED, HEALTH_CHECK, WORK, exporters, run


def cases_in(path) -> dict[str, list[ET.Element]]:
    """The junit file's testcases by name, in order."""
    cases: dict[str, list[ET.Element]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        cases.setdefault(case.get("name", ""), []).append(case)
    return cases


def suite_of(path) -> dict[str, str]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return dict(suite.attrib)


def properties(case: ET.Element, name: str) -> list[str]:
    return [p.get("value", "") for p in case.iterfind("properties/property") if p.get("name") == name]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_junit_has_one_testcase_per_retried_test_with_its_verdict(pytester, workers):
    flaky = str(pytester.path / "flaky.count")
    labels = {"sick": {"a": "1"}, "flaky": {"b": "1"}, "good": {"a": "1", "b": "1"}}
    args = exporters(pytester, ("sick", {"sick": True}), ("flaky", {"flaky": flaky}), ("good", {}), labels=labels)
    pytester.makepyfile(test_it=CLASSIFIED)
    result = run(pytester, "-n", workers, *args, "--jumpstarter-retry-elsewhere", "2", "--junitxml", "out.xml")
    result.assert_outcomes(passed=2, failed=1)
    suite = suite_of(pytester.path / "out.xml")
    assert (suite["tests"], suite["failures"], suite["errors"]) == ("3", "1", "0")
    cases = cases_in(pytester.path / "out.xml")
    assert {name: len(found) for name, found in cases.items()} == {"test_board": 1, "test_flaky": 1, "test_code": 1}
    board, code = cases["test_board"][0], cases["test_code"][0]
    assert board.find("failure") is None and board.find("error") is None, "passed on another board: it passes"
    assert code.find("failure") is not None, "failed on every board: it fails"
    assert properties(code, "jumpstarter_verdict") == ["code"]
    assert len(properties(code, "jumpstarter_attempt")) == 3
    if workers == "2":  # test_board and test_flaky may reach the good board first, and pass there at once
        return
    assert properties(board, "jumpstarter_verdict") == ["board"]
    attempts = properties(board, "jumpstarter_attempt")
    assert [a.split(" (")[0] for a in attempts] == ["sick: failed", "good: passed", "sick: failed"]
    assert "no answer on the serial console" in attempts[0]
    assert properties(cases["test_flaky"][0], "jumpstarter_verdict") == ["flaky"]


def test_junit_has_one_testcase_per_health_check_and_board(pytester):
    """A board's check runs again after a failure there: its last run is its testcase; a sick board's is skipped,
    naming why, and not failed (the run isn't)."""
    args = exporters(pytester, ("b0", {}), ("b1", {"sick": True}))
    pytester.makepyfile(test_health=HEALTH_CHECK, test_work=WORK + "def test_bug(unit):\n    assert 1 + 1 == 3\n")
    result = run(pytester, *args, "--junitxml", "out.xml")
    result.assert_outcomes(passed=6 + 2, failed=1)  # b0's check: before its first test, after test_bug failed
    cases = cases_in(pytester.path / "out.xml")
    assert len(cases["test_power[b0]"]) == len(cases["test_power[b1]"]) == 1
    assert properties(cases["test_power[b0]"][0], "jumpstarter_health") == ["ok"]
    skipped = cases["test_power[b1]"][0].find("skipped")
    assert skipped is not None and "b1 is out of the run: its health check" in skipped.get("message", "")
    suite = suite_of(pytester.path / "out.xml")
    assert (suite["tests"], suite["skipped"], suite["failures"]) == (str(len(cases)), "1", "1")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_progress_stays_within_100_percent_with_retries_and_health_checks(pytester, workers):
    args = exporters(pytester, ("sick", {"sick": True}), ("good", {}), ("good2", {}))
    pytester.makepyfile(test_health=HEALTH_CHECK, test_work=WORK + "def test_bug(unit):\n    assert 1 + 1 == 3\n")
    result = run(pytester, "-n", workers, "-v", *args, "--jumpstarter-retry-elsewhere", "1")
    result.assert_outcomes(passed=6 + 2 + 2, failed=1)  # the good boards' checks again after test_bug failed
    assert "retried" in result.parseoutcomes()
    percents = [int(p) for p in re.findall(r"\[\s*(\d+)%\]", result.stdout.str())]
    assert len(percents) >= 10 and max(percents) == 100, percents
    assert percents == sorted(percents), "progress never goes back"


CONFTEST_NAMES_CHECKS = """
    def pytest_jumpstarter_health_check(definition):
        if definition.path.name == "test_board.py" and definition.name.startswith("test_board_"):
            return True
"""


def test_a_conftest_names_health_checks_with_a_hook(pytester):
    args = exporters(pytester, ("b0", {}), ("b1", {"sick": True}))
    checks = pytester.mkpydir("checks")
    (checks / "conftest.py").write_text(CONFTEST_NAMES_CHECKS.replace("\n    ", "\n"))
    (checks / "test_board.py").write_text(
        "def test_board_power(unit):\n    assert unit.call('power_ok'), 'power rail low'\n\n"
        "def test_other(unit):\n    assert unit.call('work')\n"
    )
    pytester.makepyfile(test_work=WORK)
    result = run(pytester, *args, "-n", "2", ".", "-k", "work or other")  # -k doesn't deselect checks
    result.assert_outcomes(passed=7 + 1)
    result.stdout.fnmatch_lines(
        ["*b1 is out of the run: its health check checks/test_board.py::test_board_power?b1? *"]
    )
    assert result.parseoutcomes()["sick"] == 1

    # the hook is the conftest's of the check's folder: a test elsewhere named alike isn't a check
    pytester.makepyfile(test_board="def test_board_power(unit):\n    assert unit.call('work')\n")
    result = run(pytester, *args, "test_board.py", "test_work.py", "--jumpstarter-retry-elsewhere", "1")
    assert "sick" not in result.parseoutcomes() and result.ret == 0


FRAGILE = """
    from dataclasses import dataclass

    from jumpstarter.driver import Driver, export

    @dataclass(kw_only=True)
    class Unit(Driver):
        name: str
        fragile: bool = False  # its work() fails once, and the board is broken from then on
        broken: bool = False

        @classmethod
        def client(cls):
            return "jumpstarter.client.DriverClient"

        @export
        def power_ok(self) -> bool:
            return not self.broken

        @export
        def work(self) -> str:
            if self.fragile:
                self.broken = True
                raise RuntimeError(f"{self.name}: the power rail dropped")
            return self.name
"""
PAIR = """
    import pytest

    @pytest.mark.jumpstarter_health
    def test_dut_ok(dut):
        assert dut.call("power_ok"), "dut power rail low"

    @pytest.mark.jumpstarter_health
    def test_peer_ok(peer):
        assert peer.call("power_ok"), "peer power rail low"

    def test_pair(dut, peer):
        assert dut.call("work") and peer.call("work")
"""


@pytest.mark.parametrize("retries", ["0", "1"])
def test_after_a_test_on_two_boards_fails_both_are_checked_and_the_sick_one_is_named(pytester, retries):
    pytester.makepyfile(unit=FRAGILE, test_pair=PAIR)
    args = []
    for name, export, fragile in (
        ("d0", "dut", True),
        ("p0", "peer", False),
        ("d1", "dut", False),
        ("p1", "peer", False),
    ):
        config = f"name: {name}" + ("\n      fragile: true" if fragile else "")
        path = exporter_yaml(pytester.path / f"{name}.yaml", {export: "unit.Unit"}, name=name, config=config)
        args += ["--exporter", str(path)]
    # d0 is first in the lab's order: test_pair gets it, breaks it, fails; d0's check then fails, p0's passes
    result = run(pytester, *args, "--jumpstarter-retry-elsewhere", retries)
    result.stdout.fnmatch_lines(["jumpstarter: d0 is out of the run: its health check test_pair.py::test_dut_ok?d0? *"])
    assert result.parseoutcomes()["sick"] == 1, "p0 passed its check again: it stays in"
    if retries == "0":
        result.assert_outcomes(passed=4 + 1, failed=1)  # p0's check ran twice
        return
    result.assert_outcomes(passed=4 + 1 + 1)
    result.stdout.fnmatch_lines(
        [
            "test_pair.py::test_pair: failed on d0+p0, passed on d1+p1: the board",
            "*jumpstarter: board suspects*",
            "d0: 1 test(s) failed there and passed on another board:",
            "  test_pair.py::test_pair: * (*d0: the power rail dropped)",
        ]
    )
    assert not re.search(r"^(p0|d0\+p0): ", result.stdout.str(), re.M), "p0 passed its check: not a suspect"
