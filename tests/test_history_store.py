"""The history file itself: schema and migration, refusals that leave a file as it was, concurrent appends, and
the statistics of the health report (see test_history.py for whole pytest runs)."""

from __future__ import annotations

import math
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from jumpstarter.cli import main
from jumpstarter.history import store
from jumpstarter.history.health import analyse, binomial_tail, report
from jumpstarter.history.store import HistoryError, Result, RunRecord, append, check, opened

SVG = "{http://www.w3.org/2000/svg}"


def run_of(outcomes: dict[tuple[str, str], str], at: float = 1.8e9, health: dict[str, str] | None = None) -> RunRecord:
    """A run: (test, board) -> outcome; health checks: board -> outcome."""
    results = [Result(t, t, "test", 1, b, o, start=at, stop=at + 1) for (t, b), o in outcomes.items()]
    results += [
        Result("h.py::check", "h.py::check", "health", 1, b, o, start=at, stop=at) for b, o in (health or {}).items()
    ]
    boards = sorted({b for _, b in outcomes})
    return RunRecord(at, at + 2, "host", "pytest", 0, 0, boards, results)


def lab_runs(path: Path, runs: int = 3, sick: str = "b1", flaky: str = "b2") -> None:
    """Four tests on three boards per run: ``sick`` fails two of them every run, ``flaky`` one in one run, and
    test_broken fails everywhere (the code's fault, nobody's board)."""
    for run in range(runs):
        outcomes = {}
        for board in ("b0", "b1", "b2"):
            for n in range(4):
                bad = (board == sick and n % 2) or (board == flaky and run == 1 and n == 0)
                outcomes[(f"t.py::test_{n}", board)] = "failed" if bad else "passed"
            outcomes[("t.py::test_broken", board)] = "failed"
        health = {"b0": "passed", "b1": "failed", "b2": "passed"}
        append(path, run_of(outcomes, 1.8e9 + run * 3600, health))


def test_a_history_flags_the_board_that_fails_what_others_pass(tmp_path):
    path = tmp_path / "lab.db"
    lab_runs(path)
    health = analyse(path, days=None)
    boards = {b.name: b for b in health.boards}
    assert [b.name for b in health.flagged] == ["b1"]
    b1 = boards["b1"]
    assert (b1.runs, b1.tests, b1.failed) == (3, 15, 9)  # test_broken's 3 count as failures, not as evidence
    assert (b1.suspect_runs, b1.suspect_failed) == (12, 6) and (b1.peer_runs, b1.peer_failed) == (24, 1)
    assert b1.p_value < 1e-4 and boards["b2"].p_value > 0.1
    assert (b1.health_failed, b1.health_passed, b1.last_health and b1.last_health[0]) == (3, 0, "failed")
    lines = report(health)
    assert lines[0].startswith(f"{path}: 3 runs from ") and "3 boards" in lines[0]
    assert lines[1].split()[:6] == ["board", "runs", "tests", "failed", "rate", "passed"]
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert rows["b1"].endswith("SUSPECT") and not rows["b0"].endswith("SUSPECT")
    assert rows["b1"].split()[1:5] == ["3", "15", "9", "60%"] and "3 of 3 failed; last failed" in rows["b1"]
    assert any(
        line.startswith("SUSPECT b1: 6 of 12 runs of tests that passed on other boards failed here") for line in lines
    )
    assert "exact one-sided binomial test" in lines[-1] and "p < 3.3e-03 (0.01 / 3 boards, Bonferroni)" in lines[-1]


def test_one_bad_run_is_not_a_suspect_and_the_window_forgets_old_runs(tmp_path):
    path = tmp_path / "lab.db"
    lab_runs(path, runs=1, flaky="")  # b1 failed 2 of 4 once: fewer than 3 such failures
    assert analyse(path, days=None).flagged == []
    lab_runs(path, runs=3)  # then three more runs with b1 sick, at the same times as before
    assert [b.name for b in analyse(path, days=None).flagged] == ["b1"]
    later = 1.8e9 + 40 * 86400  # forty days later, the 30-day window holds none of them
    assert analyse(path, now=later).runs == 0 and analyse(path, now=later).boards == []


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 5, 0.3), (3, 10, 0.1), (1, 10, 0.5), (6, 12, 0.02), (40, 40, 0.9), (7, 50, 0.2)]
)
def test_the_binomial_tail_is_exact(k, n, p):
    exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert math.isclose(binomial_tail(k, n, p), exact, rel_tol=1e-9, abs_tol=1e-15)


def test_jumpstarter_health_prints_the_table_and_draws_the_page(tmp_path, capsys):
    path = tmp_path / "lab.db"
    lab_runs(path)
    assert main(["health", str(path), "--days", "0", "--html", str(tmp_path / "health.html")]) == 0
    out = capsys.readouterr().out
    assert "SUSPECT b1: 6 of 12" in out and f"jumpstarter health: drawn in {tmp_path / 'health.html'}" in out
    root = ET.parse(tmp_path / "health.html").getroot()  # well-formed: XHTML-clean as the timeline's
    text = (tmp_path / "health.html").read_text()
    assert "<script" not in text and "https://" not in text
    rows = {g.get("data-board"): g for g in root.iter(f"{SVG}g") if "row" in (g.get("class") or "").split()}
    assert {name: g.get("data-flagged") for name, g in rows.items()} == {"b0": "false", "b1": "true", "b2": "false"}
    slots = [g for g in rows["b1"].iter(f"{SVG}g") if g.get("class") == "slot"]
    assert len(slots) == 3 and {g.get("data-failed") for g in slots} == {"3"}  # test_broken and two sick ones
    assert all(g.get("data-health-failed") == "1" for g in slots)
    b2 = [g.get("data-failed") for g in rows["b2"].iter(f"{SVG}g") if g.get("class") == "slot"]
    assert b2 == ["1", "2", "1"]


def test_a_new_history_has_the_current_schema_and_an_older_one_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for statement in store.MIGRATIONS[0]:  # a history written by the first schema
        db.execute(statement)
    db.execute(f"PRAGMA application_id = {store.APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO runs (started, host) VALUES (1.8e9, 'old')")
    db.commit()
    db.close()
    assert check(path) == 1
    append(path, run_of({("t.py::a", "b0"): "passed"}))
    with opened(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA
        assert [r[0] for r in db.execute("SELECT host FROM runs ORDER BY id")] == ["old", "host"]
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"runs_started", "results_run"} <= indexes
    fresh = tmp_path / "new.db"
    assert check(fresh) == 0
    with opened(fresh) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA


def damaged_files(folder: Path) -> dict[str, Path]:
    """History files that can't be read: not SQLite, truncated, a page overwritten, newer, someone else's."""
    good = folder / "good.db"
    for n in range(40):  # several pages of records
        append(good, run_of({(f"t.py::test_{n}_{'x' * 200}", "b0"): "passed"}))
    data = good.read_bytes()
    files = {
        "text": b"this is a CSV file, not a database\n" * 10,
        "truncated": data[: len(data) // 2],
        "corrupt": data[:8192] + os.urandom(4096) + data[12288:],
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.db"
        paths[name].write_bytes(content)
    newer = paths["newer"] = folder / "newer.db"
    newer.write_bytes(data)
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {store.SCHEMA + 1}")
    other = paths["other"] = folder / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE accounts (name TEXT)")
    return paths


def test_a_damaged_newer_or_foreign_file_is_refused_by_name_and_left_as_it_was(tmp_path, capsys):
    for name, path in damaged_files(tmp_path).items():
        before = path.read_bytes()
        for attempt in ("check", "append"):
            with pytest.raises(HistoryError) as refused:
                if attempt == "check":
                    check(path)
                else:
                    append(path, run_of({("t.py::a", "b0"): "passed"}))
            message = str(refused.value)
            assert message.startswith(str(path)), (name, message)
            if name == "newer":
                assert f"written by a newer jumpstarter (history schema {store.SCHEMA + 1}" in message
            elif name == "other":
                assert "not a jumpstarter history" in message
            else:
                assert "not a readable jumpstarter history (damaged or not SQLite" in message, (name, message)
                assert "the other runs' records are still in it" in message
            assert path.read_bytes() == before, name
        assert not path.with_name(path.name + "-journal").exists()
        assert main(["health", str(path)]) == 1
        assert capsys.readouterr().err.startswith(f"jumpstarter health: {path}")


def test_hostile_paths_are_refused_without_writing_through_them(tmp_path):
    folder = tmp_path / "history.db"
    folder.mkdir()
    with pytest.raises(HistoryError, match="is a folder: give the history's file name"):
        check(folder)
    elsewhere = tmp_path / "someone-elses.txt"
    elsewhere.write_text("precious")
    link = tmp_path / "link.db"
    link.symlink_to(elsewhere)
    with pytest.raises(HistoryError, match="link.db is a symlink: refused"):
        append(link, run_of({("t.py::a", "b0"): "passed"}))
    dangling = tmp_path / "dangling.db"
    dangling.symlink_to(tmp_path / "would-be-made.db")
    with pytest.raises(HistoryError, match="dangling.db is a symlink: refused"):
        check(dangling)
    assert elsewhere.read_text() == "precious" and not (tmp_path / "would-be-made.db").exists()
    good = tmp_path / "good.db"
    check(good)
    journal = good.with_name("good.db-journal")
    journal.symlink_to(elsewhere)
    with pytest.raises(HistoryError, match="good.db-journal is a symlink: refused"):
        append(good, run_of({("t.py::a", "b0"): "passed"}))
    assert elsewhere.read_text() == "precious"
    under_a_file = elsewhere / "history.db"
    with pytest.raises(HistoryError, match="someone-elses.txt/history.db: "):
        check(under_a_file)
    with pytest.raises(HistoryError, match="no such history file"):
        analyse(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


UNWRITABLE = """
import os, sys
from pathlib import Path
from jumpstarter.history.store import HistoryError, RunRecord, append
if os.getuid() == 0:
    os.setgid(65534)
    os.setuid(65534)  # root may write anything: be nobody
try:
    append(Path(sys.argv[1]), RunRecord(1.8e9, 1.8e9, "h", "pytest", 0, 0, []))
except HistoryError as exc:
    print(exc)
"""


def test_an_unwritable_history_is_a_clear_error():
    with tempfile.TemporaryDirectory() as folder:  # in /tmp itself: a folder that another user may enter
        path = Path(folder) / "lab.db"
        lab_runs(path, runs=1)
        before = path.read_bytes()
        Path(folder).chmod(0o755)
        path.chmod(0o444)
        result = subprocess.run(
            [sys.executable, "-c", UNWRITABLE, str(path)], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.stdout.startswith(f"{path}: can't append to it: attempt to write a readonly database"), result
        assert path.read_bytes() == before


def _appender(path: str, runs: int, worker: int) -> None:
    for n in range(runs):
        append(Path(path), run_of({(f"t.py::test_{worker}_{n}", f"b{worker}"): "passed"}))


def test_concurrent_appends_wait_for_each_other_and_all_land(tmp_path):
    path = tmp_path / "shared.db"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_appender, args=(str(path), 25, w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
        assert w.exitcode == 0
    with opened(path) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 100
        assert db.execute("SELECT COUNT(DISTINCT nodeid) FROM results").fetchone()[0] == 100
        assert [r[0] for r in db.execute("PRAGMA integrity_check")] == ["ok"]
