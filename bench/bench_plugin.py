"""The pytest plugin's own cost: per-test fixture overhead, and start-up to the first test.

    .venv/bin/python bench/bench_plugin.py [--tests 1000] [--rounds 3] [--launch-only]

Two temporary test files hold the same N trivial tests, one taking the
``custom`` fixture of a YAML exporter run in a subprocess, the other taking
nothing. Each is run by pytest in a child process, alternating for several
rounds so that the machine's drifting load falls on both alike. A small
plugin records each test's setup+call+teardown time and the moment the first
test starts. Reported: median per-test time with the fixture (a lease per
test, and one lease for the session) and without it, their differences
(target for the fixture: <= 1 ms), per-test time with a mocked export (a third file, the
jumpstarter_mock marker on each test: target <= 5 ms over none), per-test time replayed from a recording
(a fourth file, recorded once with --jumpstarter-record, replayed with --jumpstarter-replay), and
launch-to-first-test with the exporter against a run without any exporter.
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
CUSTOM_YAML = ROOT / "examples" / "jumpstarter-custom-driver" / "custom.yaml"
BOARD_YAML = ROOT / "examples" / "jumpstarter-driver-demo" / "board.yaml"

TIMER = """
import json, os, time
import pytest

durations, first = {}, []

def pytest_runtest_call(item):
    if not first:
        first.append(time.time())

def pytest_runtest_logreport(report):
    durations[report.nodeid] = durations.get(report.nodeid, 0.0) + report.duration

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as out:
        json.dump({"durations": list(durations.values()), "first": first[0] if first else None}, out)
"""


def run(project: Path, test_file: str, *args: str) -> dict:
    out = project / "out.json"
    env = {
        **os.environ,
        "BENCH_OUT": str(out),
        "PYTHONPATH": os.pathsep.join((str(project), str(ROOT))),
    }  # this tree's code
    launched = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "bench_timer", "-p", "no:cacheprovider", test_file, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"pytest {test_file} failed:\n{done.stdout}\n{done.stderr}")
    data = json.loads(out.read_text())
    data["to_first_test"] = data["first"] - launched
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--launch-only", action="store_true", help="measure only launch to first test")
    options = parser.parse_args()
    exporter = ("--exporter", str(CUSTOM_YAML))
    with tempfile.TemporaryDirectory(prefix="bench-plugin-") as tmp:
        project = Path(tmp)
        (project / "bench_timer.py").write_text(TIMER)
        # A project of its own, as a real one has: without a config file pytest would take the common ancestor of
        # the test file and the exporter's YAML (its value after a space counts as a path) for the rootdir, here /,
        # and collection would walk / and /tmp.
        (project / "pytest.ini").write_text("[pytest]\n")
        if options.launch_only:
            launch(project, options.rounds)
            return
        (project / "test_with.py").write_text(
            "".join(f"def test_{i}(custom):\n    pass\n" for i in range(options.tests))
        )
        (project / "test_without.py").write_text("".join(f"def test_{i}():\n    pass\n" for i in range(options.tests)))
        (project / "test_mocked.py").write_text(
            "import pytest\nfrom jumpstarter_driver_demo import Board\n\n"
            + "".join(
                f"@pytest.mark.jumpstarter_mock(board=Board)\ndef test_{i}(board):\n    pass\n"
                for i in range(options.tests)
            )
        )
        (project / "test_replayed.py").write_text(
            "".join(f"def test_{i}(board):\n    assert board.add({i}, 1) == {i + 1}\n" for i in range(options.tests))
        )
        recordings = str(project / "recordings")
        run(project, "test_replayed.py", "--exporter", str(BOARD_YAML), "--jumpstarter-record", recordings)
        write_launch_tests(project)
        with_fixture, session_lease, without, start_yaml, start_plain, mocked, replayed = [], [], [], [], [], [], []
        for _ in range(options.rounds):
            with_fixture.append(statistics.median(run(project, "test_with.py", *exporter)["durations"]))
            session = run(project, "test_with.py", *exporter, "--lease-scope", "session")["durations"]
            session_lease.append(statistics.median(session))
            without.append(statistics.median(run(project, "test_without.py", *exporter)["durations"]))
            mocked.append(statistics.median(run(project, "test_mocked.py")["durations"]))
            replayed.append(
                statistics.median(run(project, "test_replayed.py", "--jumpstarter-replay", recordings)["durations"])
            )
            start_yaml.append(run(project, "test_one.py", *exporter)["to_first_test"])
            start_plain.append(run(project, "test_one_plain.py")["to_first_test"])
    w, s, wo = statistics.median(with_fixture), statistics.median(session_lease), statistics.median(without)
    print(f"{options.tests} trivial tests, {options.rounds} alternating rounds, medians")
    print(f"  per test with the fixture, a lease per test (default): {w * 1e3:7.3f} ms")
    print(f"  per test with the fixture, one lease for the session:  {s * 1e3:7.3f} ms")
    print(f"  per test without the fixture:                          {wo * 1e3:7.3f} ms")
    print(f"  fixture overhead per test, lease aside: {(s - wo) * 1e3:.3f} ms (target <= 1 ms); ratio {s / wo:.2f}x")
    print(f"  fixture overhead per test with its lease: {(w - wo) * 1e3:.3f} ms; ratio {w / wo:.2f}x")
    print(f"  the lease itself (take + release) per test: {(w - s) * 1e3:.3f} ms (target <= 0.5 ms)")
    m = statistics.median(mocked)
    print(f"  per test with a mocked export (in-process serve()):    {m * 1e3:7.3f} ms")
    print(f"  mock overhead per test: {(m - wo) * 1e3:.3f} ms (target <= 5 ms); ratio {m / wo:.2f}x")
    r = statistics.median(replayed)
    print(f"  per test replayed (--jumpstarter-replay, one call each): {r * 1e3:7.3f} ms")
    print(f"  replay overhead per test: {(r - wo) * 1e3:.3f} ms; ratio to a mocked test {r / m:.2f}x")
    print_launch(start_yaml, start_plain)


def write_launch_tests(project: Path) -> None:
    (project / "test_one.py").write_text("def test_one(custom):\n    pass\n")
    (project / "test_one_plain.py").write_text("def test_one():\n    pass\n")


def launch(project: Path, rounds: int) -> None:
    """Only launch to first test, with the exporter and without, alternating."""
    write_launch_tests(project)
    start_yaml, start_plain = [], []
    for _ in range(rounds):
        start_yaml.append(run(project, "test_one.py", "--exporter", str(CUSTOM_YAML))["to_first_test"])
        start_plain.append(run(project, "test_one_plain.py")["to_first_test"])
    print(f"{rounds} alternating rounds, medians; ratios per round: ", end="")
    print(" ".join(f"{y / p:.2f}" for y, p in zip(start_yaml, start_plain, strict=True)))
    print_launch(start_yaml, start_plain)


def print_launch(start_yaml: list[float], start_plain: list[float]) -> None:
    sy, sp = statistics.median(start_yaml), statistics.median(start_plain)
    print(f"  launch to first test, one YAML exporter (subprocess): {sy * 1e3:7.1f} ms")
    print(f"  launch to first test, no exporter:                    {sp * 1e3:7.1f} ms")
    print(f"  start-up cost of the exporter: {(sy - sp) * 1e3:.1f} ms; ratio {sy / sp:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
