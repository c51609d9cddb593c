"""Blame follows the evidence in the history: a test on two boards ("d0+p0") that fails, after which d0's health
check fails and p0's passes, counts against d0 only; p0's row keeps its outcome, marked ``blamed``, and counts
against no one. Whole pytest runs of real exporters (the fragile Unit of test_health_reports), the rows they write,
and a history of the schema before ``blamed``, migrated on open."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from samples import exporter_yaml
from test_board_health import run
from test_health_reports import FRAGILE, PAIR
from test_history import health, rows

from jumpstarter.history import store
from jumpstarter.history.health import analyse
from jumpstarter.history.store import Result, RunRecord, append, check
from pytest_jumpstarter.history import results_of
from pytest_jumpstarter.records import RanTest


def pair_boards(pytester, fragile: str = "d0") -> list[str]:
    """--exporter arguments for duts d0, d1 and peers p0, p1; ``fragile`` breaks at its first work()."""
    args = []
    for name, export in (("d0", "dut"), ("p0", "peer"), ("d1", "dut"), ("p1", "peer")):
        config = f"name: {name}" + ("\n      fragile: true" if name == fragile else "")
        path = exporter_yaml(pytester.path / f"{name}.yaml", {export: "unit.Unit"}, name=name, config=config)
        args += ["--exporter", str(path)]
    return args


def test_three_runs_of_a_pair_test_flag_the_sick_board_and_not_its_healthy_partner(pytester):
    pytester.makepyfile(unit=FRAGILE, test_pair=PAIR)
    history = pytester.path / "history.db"
    for _ in range(3):
        # d0 is first in the lab's order: test_pair gets d0+p0, breaks d0, fails; d0's check then fails, p0's
        # passes; the retry passes on d1+p1.
        result = run(pytester, *pair_boards(pytester), "--jumpstarter-retry-elsewhere", "1", "--jumpstarter-history",
                     str(history))  # fmt: skip
        result.assert_outcomes(passed=4 + 1 + 1)
        assert result.parseoutcomes()["sick"] == 1
        result.stdout.fnmatch_lines(["test_pair.py::test_pair: failed on d0+p0, passed on d1+p1: the board"])

    # The outcome is recorded as it was, on both boards; p0's row names the board it is blamed on.
    failed = "SELECT exporter, blamed, COUNT(*) FROM results WHERE role = 'test' AND outcome = 'failed' "
    assert rows(history, failed + "GROUP BY exporter, blamed ORDER BY exporter") == [("d0", "", 3), ("p0", "d0", 3)]

    report = health(history)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[1].split()[:8] == ["board", "runs", "tests", "failed", "rate", "passed", "elsewhere", "partner"]
    table = {line.split()[0]: line.split() for line in lines[2:6]}
    # runs, tests, failed, rate, passed elsewhere, partner sick
    assert table["p0"][1:7] == ["3", "0", "0", "n/a", "0", "3"] and table["p0"][-1] != "SUSPECT"
    assert table["d0"][1:7] == ["3", "3", "3", "100%", "3", "0"] and table["d0"][-1] == "SUSPECT"
    assert table["d1"][1:7] == table["p1"][1:7] == ["3", "3", "0", "0%", "0", "0"]
    suspects = [line for line in lines if line.startswith("SUSPECT")]
    assert suspects == [
        f"SUSPECT d0: 3 of 3 runs of tests that passed on other boards failed here; 0 of 6 on the other boards "
        f"(p = {analyse(history, days=None).flagged[0].p_value:.1e})"
    ]
    boards = {b.name: b for b in analyse(history, days=None).boards}
    assert (boards["p0"].failed, boards["p0"].blamed, boards["p0"].flagged) == (0, 3, False)
    assert (boards["p0"].suspect_runs, boards["d0"].peer_runs, boards["d0"].peer_failed) == (0, 6, 0)


def ran(attempts: list[tuple[str, str]], sick: list[str]) -> RanTest:
    return RanTest("t.py::test_pair", attempts=attempts, sick=sick, verdict="board")


def test_a_failed_try_on_two_boards_is_blamed_on_the_one_whose_check_failed():
    tries = [("d0+p0", "failed"), ("d1+p1", "passed")]
    blame = {(r.exporter, r.outcome, r.blamed) for r in results_of(ran(tries, ["d0"]), matrix=False)}
    assert blame == {("d0", "failed", ""), ("p0", "failed", "d0"), ("d1", "passed", ""), ("p1", "passed", "")}
    # No check singled a board out (none failed, or all did): both rows count, as they always did.
    for sick in ([], ["d0", "p0"]):
        assert {r.blamed for r in results_of(ran(tries, sick), matrix=False)} == {""}
    # A board alone in its try is never excused: its failure is its own.
    alone = [("d0", "failed"), ("d1", "passed"), ("d0", "failed")]
    assert {r.blamed for r in results_of(ran(alone, ["d0"]), matrix=False)} == {""}
    assert {r.blamed for r in results_of(ran(alone, []), matrix=False, out_of_run={"d0"})} == {""}


def test_a_board_taken_out_elsewhere_in_the_run_is_blamed_when_the_test_did_not_see_it():
    """Under xdist the check of d0 may run on another worker and end after the pair test was logged: its ``sick``
    is empty, but the run knows d0 was taken out, after the try it took part in."""
    tries = [("d0+p0", "failed"), ("d1+p1", "passed")]
    rows = results_of(ran(tries, []), matrix=False, out_of_run={"d0"})
    blame = {(r.exporter, r.outcome, r.blamed) for r in rows}
    assert blame == {("d0", "failed", ""), ("p0", "failed", "d0"), ("d1", "passed", ""), ("p1", "passed", "")}
    # Both boards of the try out: neither is singled out, both rows count.
    assert {r.blamed for r in results_of(ran(tries, []), matrix=False, out_of_run={"d0", "p0"})} == {""}


def schema_2_history(path: Path) -> None:
    """A history as the schema before ``blamed`` wrote it: one run, a pair test failed on d0+p0, passed on d1+p1."""
    db = sqlite3.connect(path)
    for step in store.MIGRATIONS[:2]:
        for statement in step:
            db.execute(statement)
    db.execute(f"PRAGMA application_id = {store.APPLICATION_ID}")
    db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO runs (id, started, finished, host) VALUES (1, 1.8e9, 1.8e9, 'old')")
    for board, outcome in (("d0", "failed"), ("p0", "failed"), ("d1", "passed"), ("p1", "passed")):
        db.execute(
            "INSERT INTO results VALUES (1, 't.py::pair', 't.py::pair', 'test', 1, ?, ?, '', 0, 1.8e9, 1.8e9, NULL, "
            "NULL)",
            (board, outcome),
        )
    db.commit()
    db.close()


def test_a_history_of_the_schema_before_blame_is_migrated_and_its_rows_count_as_before(tmp_path):
    path = tmp_path / "v2.db"
    schema_2_history(path)
    assert check(path) == 1  # its runs; migrated
    new = [Result("t.py::pair", "t.py::pair", "test", 1, b, "failed", blamed="d0" if b == "p0" else "") for b in
           ("d0", "p0")]  # fmt: skip
    append(path, RunRecord(1.8e9 + 60, 1.8e9 + 61, "host", "pytest", 1, 0, ["d0", "p0"], new))
    assert rows(path, "PRAGMA user_version") == [(store.SCHEMA,)]
    assert rows(path, "SELECT run, exporter, blamed FROM results WHERE exporter = 'p0' ORDER BY run") == [
        (1, "p0", ""),
        (2, "p0", "d0"),
    ]
    boards = {b.name: b for b in analyse(path, days=None).boards}
    assert (boards["p0"].tests, boards["p0"].failed, boards["p0"].blamed) == (1, 1, 1)  # the old row counts
    assert (boards["d0"].tests, boards["d0"].failed, boards["d0"].blamed) == (2, 2, 0)


READ_ONLY = """
import os, sys
from pathlib import Path
from jumpstarter.history.health import analyse
if os.getuid() == 0:
    os.setgid(65534)
    os.setuid(65534)  # root may write anything: be nobody
boards = {b.name: b for b in analyse(Path(sys.argv[1]), days=None).boards}
print(*[f"{n}={b.tests}/{b.failed}/{b.blamed}" for n, b in sorted(boards.items())])
"""


def test_a_read_only_history_of_the_schema_before_blame_is_read_as_it_is():
    with tempfile.TemporaryDirectory() as folder:  # in /tmp itself: a folder that another user may enter
        path = Path(folder) / "v2.db"
        schema_2_history(path)
        before = path.read_bytes()
        Path(folder).chmod(0o755)
        path.chmod(0o444)
        result = subprocess.run(
            [sys.executable, "-c", READ_ONLY, str(path)], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.stdout.split() == ["d0=1/1/0", "d1=1/0/0", "p0=1/1/0", "p1=1/0/0"], result
        assert path.read_bytes() == before, "read, not migrated"
