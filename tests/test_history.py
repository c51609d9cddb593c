"""The lab's memory in whole pytest runs: three real exporters of a probe driver, one of them sick; runs append to
a history, `jumpstarter health` flags the sick board, --jumpstarter-quarantine keeps it out, under xdist too."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from samples import exporter_yaml

from jumpstarter.history.store import SCHEMA
from pytest_jumpstarter.history import Redactor, key_of

# A board that answers measure(n), or, when its config says it is sick, fails it for odd n (a loose cable).
PROBE_DRIVER = """
    from dataclasses import dataclass
    from jumpstarter.driver import Driver, export

    @dataclass(kw_only=True)
    class Probe(Driver):
        sick: bool = False

        @classmethod
        def client(cls):
            return "jumpstarter.client.DriverClient"

        @export
        def measure(self, n):
            if self.sick and n % 2:
                raise IOError(f"no answer from the board (n={n})")
            return n
"""
TESTS = """
    import pytest

    @pytest.mark.parametrize("n", range(4))
    def test_measure(probe, n):
        assert probe.call("measure", n) == n
"""
SECRET = "s3cr3t-pass"


def boards(folder: Path) -> list[str]:
    """--exporter arguments for b0, b1 (sick) and b2, YAML exporters the plugin starts."""
    args = []
    for name in ("b0", "b1", "b2"):
        config = f"sick: {'true' if name == 'b1' else 'false'}"
        path = exporter_yaml(
            folder / f"{name}.yaml", {"probe": "probe_driver.Probe"}, name=name, labels={"unit": name}, config=config
        )
        args += ["--exporter", str(path)]
    return args


def health(path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jumpstarter", "health", str(path), "--days", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def rows(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(query).fetchall()


def test_three_runs_flag_the_sick_board_and_quarantine_keeps_it_out(pytester):
    pytester.makepyfile(probe_driver=PROBE_DRIVER, test_probe=TESTS)
    history = pytester.path / "lab" / "history.db"
    for run in range(3):
        result = pytester.runpytest_subprocess(
            "--exporter-matrix", *boards(pytester.path), "--jumpstarter-history", "lab/history.db",
            "--exporter-passphrase", SECRET, timeout=300,
        )  # fmt: skip
        result.assert_outcomes(passed=10, failed=2)  # b1 fails measure(1) and measure(3)
        result.stdout.fnmatch_lines(
            [
                f"jumpstarter: history {history} ({run} runs so far)",
                f"jumpstarter: history: run {run + 1} appended to {history} (12 results)",
            ]
        )
    # Matrix ids name the board; the history compares the same test across boards.
    keys = {key for (key,) in rows(history, "SELECT DISTINCT key FROM results")}
    assert keys == {f"test_probe.py::test_measure[{n}]" for n in range(4)}
    assert rows(
        history, "SELECT exporter, COUNT(*) FROM results WHERE outcome = 'failed' AND elsewhere GROUP BY exporter"
    ) == [("b1", 6)]
    assert SECRET.encode() not in history.read_bytes()

    report = health(history, "--html", "health.html")
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    table = {line.split()[0]: line.split() for line in lines[2:5]}
    assert table["b1"][1:6] == ["3", "12", "6", "50%", "6"] and table["b1"][-1] == "SUSPECT"
    assert table["b0"][1:6] == ["3", "12", "0", "0%", "0"] and table["b0"][-1] != "SUSPECT"
    assert table["b2"][-1] != "SUSPECT"
    assert [line.split(":")[0] for line in lines if line.startswith("SUSPECT")] == ["SUSPECT b1"]

    # Quarantine, under xdist: b1 is kept out; a test only b1 fits still runs there, saying so at the start.
    pytester.makepyfile(
        test_only_b1="""
            import pytest

            @pytest.mark.exporter(unit="b1")
            def test_on_b1(probe):
                assert probe.call("measure", 0) == 0
        """
    )
    result = pytester.runpytest_subprocess(
        "-n", "2", *boards(pytester.path), "--jumpstarter-history", str(history), "--jumpstarter-quarantine",
        timeout=300,
    )  # fmt: skip
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["jumpstarter: quarantine: b1 is kept out of this run unless no other board fits a test: 6 of 12 runs *"]
    )
    used = rows(history, "SELECT nodeid, exporter, worker FROM results WHERE run = 4")
    assert {e for n, e, _ in used if "test_measure" in n} <= {"b0", "b2"}, used
    assert [e for n, e, _ in used if "test_on_b1" in n] == ["b1"]
    assert rows(history, "SELECT COUNT(*), MAX(workers) FROM runs") == [(4, 2)]  # one run: the controller's
    assert {w for _, _, w in used} <= {"gw0", "gw1"}

    # In matrix mode, the quarantined board's ids are left out, but for the test that only it fits.
    result = pytester.runpytest_subprocess(
        "--exporter-matrix", *boards(pytester.path), "--jumpstarter-history", str(history),
        "--jumpstarter-quarantine", "-v", timeout=300,
    )  # fmt: skip
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines(["*test_on_b1[[]b1[]] PASSED*"])
    assert "test_measure[1-b1]" not in result.stdout.str() and "test_measure[b1-1]" not in result.stdout.str()
    assert rows(history, "SELECT DISTINCT exporter FROM results WHERE run = 5 ORDER BY exporter") == [
        ("b0",),
        ("b1",),
        ("b2",),
    ]


def test_two_runs_at_once_both_land(pytester):
    pytester.makepyfile(probe_driver=PROBE_DRIVER, test_probe=TESTS)
    history = pytester.path / "shared.db"
    env = {**os.environ, "JUMPSTARTER_HISTORY": str(history)}  # the env twin of --jumpstarter-history
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                *boards(pytester.path)[2 * i : 2 * i + 2],
            ],
            cwd=pytester.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 1], outputs  # b0 passes, b1 fails two
    assert rows(history, "SELECT exporters FROM runs ORDER BY exporters") == [("b0",), ("b1",)]
    assert rows(history, "SELECT COUNT(*) FROM results") == [(8,)]
    assert rows(history, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.parametrize("kind", ["damaged", "newer", "folder", "symlink"])
def test_a_history_that_cant_be_used_stops_the_run_before_any_test(pytester, kind):
    pytester.makepyfile(probe_driver=PROBE_DRIVER, test_probe=TESTS)
    path = pytester.path / "history.db"
    precious = pytester.path / "precious.txt"
    precious.write_text("someone else's")
    if kind == "damaged":
        path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 2000)
    elif kind == "newer":
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA application_id = 1246580808")  # "JMPH"
            db.execute(f"PRAGMA user_version = {SCHEMA + 5}")
            db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY)")
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(precious)
    before = path.read_bytes() if path.is_file() else None
    result = pytester.runpytest_subprocess(*boards(pytester.path)[:2], "--jumpstarter-history", str(path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = {
        "damaged": "not a readable jumpstarter history (damaged or not SQLite",
        "newer": f"written by a newer jumpstarter (history schema {SCHEMA + 5}; this one knows up to {SCHEMA})",
        "folder": "is a folder: give the history's file name",
        "symlink": "is a symlink: refused",
    }[kind]
    result.stderr.fnmatch_lines([f"ERROR: jumpstarter: --jumpstarter-history: {path}*{expected}*"])
    assert "test_measure" not in result.stdout.str()
    assert precious.read_text() == "someone else's"
    if before is not None:
        assert path.read_bytes() == before


def test_collecting_only_leaves_the_history_alone(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--collect-only", "--jumpstarter-history", "history.db")
    assert result.ret == pytest.ExitCode.OK
    assert not (pytester.path / "history.db").exists()


def test_quarantine_needs_a_history(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--jumpstarter-quarantine")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--jumpstarter-quarantine (command line) keeps the boards * --jumpstarter-history FILE.db"]
    )


@pytest.mark.parametrize(
    ("nodeid", "exporter", "key"),
    [
        ("t.py::test[b1]", "b1", "t.py::test"),
        ("t.py::test[3-b1]", "b1", "t.py::test[3]"),
        ("t.py::test[b1-3]", "b1", "t.py::test[3]"),
        ("t.py::test[3]", "b1", "t.py::test[3]"),
        ("t.py::test", "b1", "t.py::test"),
    ],
)
def test_the_key_of_a_matrix_test_leaves_its_board_out(nodeid, exporter, key):
    assert key_of(nodeid, exporter) == key


def test_the_history_redacts_secrets_in_ids_names_and_errors():
    clean = Redactor([SECRET])
    texts = ["t.py::test_ok[1]", f"t.py::test_x[{SECRET}]", "t.py::test_url[https://bob:hunter22@host/p?sig=abc]", "b0"]
    clean.prepare(texts)
    assert [clean(t) for t in texts] == [
        "t.py::test_ok[1]",
        "t.py::test_x[[REDACTED]]",
        "t.py::test_url[https://[REDACTED]@host/p?[REDACTED]",  # a URL runs to the next space
        "b0",
    ]
    only_clean = Redactor([SECRET])
    only_clean.prepare(["t.py::a", "t.py::b"])  # found clean together: not redacted one by one
    assert only_clean.done == {"t.py::a": "t.py::a", "t.py::b": "t.py::b"}
