"""Replay's own cost: start-up with many recorded modules of which one runs, and per-test overhead.

    .venv/bin/python bench/bench_replay.py [--modules 100] [--calls 300] [--tests 300] [--rounds 3] [--tree DIR]

A temporary project holds ``--modules`` test modules, each with a recording of 10 tests of ``--calls`` calls
(100 x 10 x 300 calls: some 13 MB of YAML). Reported, as the median of ``--rounds`` runs in child processes:

- start-up: wall time of ``pytest --jumpstarter-replay rec test_m000.py`` (one module of the hundred runs),
  against the same run with only that module's recording in the folder;
- per test: the median setup+call+teardown of a module of ``--tests`` replayed tests making one call each.

``--tree DIR`` runs the code of another checkout (e.g. ``git archive main | tar -x -C DIR``) for a before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TIMER = """
import json, os
durations = {}

def pytest_runtest_logreport(report):
    durations[report.nodeid] = durations.get(report.nodeid, 0.0) + report.duration

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as out:
        json.dump(list(durations.values()), out)
"""

HEADER = "version: 1\ntests:\n"
TEST = (
    "  {name}:\n    fixtures: {{board: board}}\n    drivers: {{board: jumpstarter_driver_demo.client.BoardClient}}\n"
    "    calls:\n"
)
CALL = "    - {{call: board.add, args: [{a}, 1], result: {b}}}\n"


def recording(tests: int, calls: int) -> str:
    parts = [HEADER]
    for t in range(tests):
        parts.append(TEST.format(name=f"test_{t}"))
        parts.extend(CALL.format(a=i, b=i + 1) for i in range(calls))
    return "".join(parts)


def module(tests: int, calls: int) -> str:
    return "".join(
        f"def test_{t}(board):\n    for i in range({calls}):\n        assert board.add(i, 1) == i + 1\n\n"
        for t in range(tests)
    )


def run(project: Path, tree: Path, rec: str, *args: str) -> tuple[float, list[float]]:
    out = project / "out.json"
    env = {**os.environ, "BENCH_OUT": str(out), "PYTHONPATH": os.pathsep.join((str(project), str(tree)))}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "timer", "--jumpstarter-replay", rec]
        + list(args),
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"pytest failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return wall, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", type=int, default=100)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose code runs (default: this one)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as folder:
        project = Path(folder)
        (project / "timer.py").write_text(TIMER)
        (project / "many").mkdir()
        (project / "one").mkdir()
        size = 0
        for m in range(options.modules):
            text = recording(10, options.calls)
            size += len(text)
            (project / "many" / f"test_m{m:03}.yaml").write_text(text)
            (project / f"test_m{m:03}.py").write_text(module(10, options.calls))
        (project / "one" / "test_m000.yaml").write_text(recording(10, options.calls))
        (project / "test_each.py").write_text(module(options.tests, 1))
        (project / "one" / "test_each.yaml").write_text(recording(options.tests, 1))

        many, one, per_test = [], [], []
        for _ in range(options.rounds):
            many.append(run(project, options.tree, "many", "test_m000.py")[0])
            one.append(run(project, options.tree, "one", "test_m000.py")[0])
            per_test.append(statistics.median(run(project, options.tree, "one", "test_each.py")[1]))
        print(f"code: {options.tree}")
        print(f"recordings: {options.modules} modules, {size / 1e6:.1f} MB; one module runs (10 tests)")
        print(f"start-up, {options.modules} recorded modules: {statistics.median(many):.2f} s (median wall time)")
        print(f"start-up, its own recording only:  {statistics.median(one):.2f} s")
        print(f"per replayed test (1 call):          {statistics.median(per_test) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
