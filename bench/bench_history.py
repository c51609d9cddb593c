"""The history's costs: appending a run (per test), checking the file at a run's start, and `jumpstarter health`
on a large history.

    .venv/bin/python bench/bench_history.py [--tests 2000] [--recorded 100000] [--boards 50]

Append: a run of N tests as the controller has gathered them (``RanTest`` and ``LeaseRecord``, one board each) is
turned into the history's rows (redaction included) and appended in one transaction, into a history that already
holds ``--recorded`` results; reported per test (median of 5). Health: a history of ``--recorded`` test results
from 500-test runs over ``--boards`` boards, two of them sick (failing 8% of tests that pass elsewhere, against
1% flakiness everywhere), read by ``analyse`` and drawn as text and HTML; the suspects it flags are printed too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jumpstarter.history import page  # noqa: E402
from jumpstarter.history.health import analyse, report  # noqa: E402
from jumpstarter.history.store import Result, RunRecord, append, check  # noqa: E402
from pytest_jumpstarter.history import History  # noqa: E402
from pytest_jumpstarter.records import LeaseRecord, RanTest  # noqa: E402

RUN_SIZE = 500


def recorded(path: Path, results: int, boards: int, sick: set[str]) -> None:
    rng = random.Random(1)
    names = [f"rpi-{i:02d}" for i in range(boards)]
    start = time.time() - 20 * 86400
    for run in range(results // RUN_SIZE):
        at = start + run * 600
        rows = []
        for n in range(RUN_SIZE):
            board = rng.choice(names)
            bad = rng.random() < (0.08 if board in sick else 0.01)
            key = f"tests/test_{n % 50}.py::test_{n}"
            rows.append(Result(key, key, "test", 1, board, "failed" if bad else "passed", start=at, stop=at + 1))
        for board in names[run % 5 :: 5]:  # a fifth of the boards get a health check each run
            rows.append(Result("h.py::check", "h.py::check", "health", 1, board, "passed", start=at, stop=at))
        append(path, RunRecord(at, at + 300, "ci", "pytest", 0, 4, names, rows))


def gathered(tests: int) -> History:
    """A History whose timeline gathered ``tests`` tests, as at a run's end (no pytest session needed)."""
    now = time.time()
    history = History.__new__(History)
    history.started = now
    ran = {}
    leases = []
    for n in range(tests):
        nodeid = f"tests/test_{n % 50}.py::test_{n}[param-{n}]"
        board = f"rpi-{n % 4:02d}"
        ran[nodeid] = RanTest(nodeid, "passed" if n % 97 else "failed", now, now + 0.1, [board], 0.01, f"gw{n % 4}")
        leases.append(LeaseRecord(nodeid, (board,), now, now + 0.01, now + 0.1, f"gw{n % 4}", test=nodeid))
    history.timeline = SimpleNamespace(tests=ran, leases=leases, gone={})  # type: ignore[assignment]
    history.lab = SimpleNamespace(  # type: ignore[assignment]
        values={"passphrase": "secret-passphrase", "matrix": False},
        exporters=[SimpleNamespace(name=f"rpi-{i:02d}") for i in range(4)],
    )
    return history


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", type=int, default=2000, help="tests per appended run")
    parser.add_argument("--recorded", type=int, default=100_000, help="test results in the history")
    parser.add_argument("--boards", type=int, default=50)
    args = parser.parse_args()
    session = SimpleNamespace(config=SimpleNamespace(invocation_params=SimpleNamespace(args=("-n", "4"))))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lab.db"
        sick = {"rpi-07", "rpi-31"}
        made = time.perf_counter()
        recorded(path, args.recorded, args.boards, sick)
        size = path.stat().st_size / 1e6
        print(f"made a history of {args.recorded} results in {time.perf_counter() - made:.1f} s: {size:.1f} MB")

        timings = []
        for _ in range(5):
            t0 = time.perf_counter()
            health = analyse(path)
            lines = report(health)
            html = page.render(health)
            timings.append(time.perf_counter() - t0)
        print(
            f"jumpstarter health on {args.recorded} results: {statistics.median(timings):.2f} s (median of 5; "
            f"html {len(html) / 1e3:.0f} kB)"
        )
        print(f"  flagged: {[b.name for b in health.flagged]} (sick: {sorted(sick)}); {lines[-1][:60]}...")

        t0 = time.perf_counter()
        check(path)
        print(f"check at a run's start (quick_check of the whole file): {(time.perf_counter() - t0) * 1e3:.0f} ms")

        history = gathered(args.tests)
        per_test = []
        for _ in range(5):
            t0 = time.perf_counter()
            record = history.record(session, 0)  # type: ignore[arg-type]
            t1 = time.perf_counter()
            append(path, record)
            t2 = time.perf_counter()
            per_test.append(((t1 - t0) / args.tests, (t2 - t1) / args.tests))
        rows = statistics.median(p[0] for p in per_test) * 1e6
        write = statistics.median(p[1] for p in per_test) * 1e6
        print(
            f"append a run of {args.tests} tests: {rows + write:.0f} us per test ({rows:.0f} us making the rows, "
            f"{write:.0f} us writing them; median of 5)"
        )


if __name__ == "__main__":
    main()
