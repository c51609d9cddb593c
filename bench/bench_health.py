"""What a sick board costs a run, with and without health checks (and with retry elsewhere).

A 32-test run on 4 boards (YAML exporters the plugin starts, one xdist worker per board): each test holds its board
for ``--test-seconds`` (0.5 s). One board is sick: its tests hang ``--sick-seconds`` (5 s, a call timing out) and
fail. Runs, one each, in this order:

- healthy: 4 good boards, no health checks (the baseline);
- sick: 3 good boards and the sick one, no health checks: the sick board fails the tests it gets, slowly;
- sick + health checks: a 20 ms health check per board takes the sick board out before its first test;
- sick + retry elsewhere 1: no health check; each failed test runs again on another board;
- sick + health checks + retry elsewhere 1: both, as a CI job of a lab runs them.

Printed: each run's test phase (the summary table's: first test's start to last one's end) and pytest's wall time,
its outcomes, and the test phases' ratios to the healthy run's.
Not a timed test: numbers for the report, `python bench/bench_health.py`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

DRIVER = """
    import time
    from dataclasses import dataclass

    from jumpstarter.driver import Driver, export

    @dataclass(kw_only=True)
    class Unit(Driver):
        sick: bool = False
        test_seconds: float = 0.2
        sick_seconds: float = 2.0

        @classmethod
        def client(cls):
            return "jumpstarter.client.DriverClient"

        @export
        def power_ok(self) -> bool:
            time.sleep(0.02)
            return not self.sick

        @export
        def work(self) -> str:
            if self.sick:
                time.sleep(self.sick_seconds)
                raise TimeoutError("no answer on the serial console")
            time.sleep(self.test_seconds)
            return "ok"
"""
CHECK = """
    import pytest

    @pytest.mark.jumpstarter_health
    def test_power(unit):
        assert unit.call("power_ok"), "power rail low"
"""


def prepare(folder: Path, sick: bool, test_seconds: float, sick_seconds: float) -> list[str]:
    (folder / "unit.py").write_text(textwrap.dedent(DRIVER))
    tests = folder / "tests"
    tests.mkdir(exist_ok=True)
    (tests / "test_work.py").write_text(
        "".join(f"def test_{i:02}(unit):\n    assert unit.call('work') == 'ok'\n\n" for i in range(32))
    )
    args = []
    for i in range(4):
        path = folder / f"board{i}.yaml"
        config = f"sick: {sick and i == 0}\n      test_seconds: {test_seconds}\n      sick_seconds: {sick_seconds}"
        path.write_text(
            "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\nmetadata:\n"
            f"  name: board{i}\nexport:\n  unit:\n    type: unit.Unit\n    config:\n      {config}\n"
        )
        args += ["--exporter", str(path)]
    return args


def run(folder: Path, args: list[str], checks: bool, keep: bool) -> tuple[float, float, str]:
    """pytest's wall time, the test phase's (the summary table's, from the first test's start to the last one's
    end: without the start-up of workers and exporters, which a loaded machine stretches), and its last line."""
    check = folder / "checks" / "test_check.py"
    check.parent.mkdir(exist_ok=True)
    paths = ["tests"]
    if checks:
        check.write_text(textwrap.dedent(CHECK))
        paths.append("checks")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-n", "4"]
    env = {**os.environ, "PYTHONPATH": str(folder)}
    done = subprocess.run(
        [*command, *args, *paths], cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if keep:
        (folder / "output.txt").write_text(done.stdout + done.stderr)
    last = done.stdout.strip().splitlines()[-1]
    seconds = re.search(r" in ([\d.]+)s", last)
    phase = re.search(r"^test phase ([\d.]+) s", done.stdout, re.M)
    if seconds is None or phase is None:
        raise SystemExit(f"no duration in pytest's output:\n{done.stdout}\n{done.stderr}")
    return float(seconds.group(1)), float(phase.group(1)), last.strip("= ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-seconds", type=float, default=0.5)
    parser.add_argument("--sick-seconds", type=float, default=5.0)
    parser.add_argument("--keep", metavar="DIR", help="run in this folder, each run's output kept there")
    options = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-health-") as temporary:
        temporary = options.keep or temporary
        for name, sick, checks, extra in (
            ("healthy", False, False, []),
            ("sick", True, False, []),
            ("sick + health checks", True, True, []),
            ("sick + retry elsewhere 1", True, False, ["--jumpstarter-retry-elsewhere", "1"]),
            ("sick + health checks + retry elsewhere 1", True, True, ["--jumpstarter-retry-elsewhere", "1"]),
        ):
            folder = Path(temporary) / name.replace(" ", "_").replace("+", "")
            folder.mkdir()
            args = prepare(folder, sick, options.test_seconds, options.sick_seconds)
            wall, phase, last = results[name] = run(folder, args + extra, checks, bool(options.keep))
            print(f"{name:40} test phase {phase:6.2f} s (pytest {wall:6.2f} s)   {last}", flush=True)
    base = results["healthy"][1]
    print(
        f"32 tests, 4 boards, 4 workers; a test holds its board {options.test_seconds} s, one on the sick board "
        f"hangs {options.sick_seconds} s and fails"
    )
    for name, (_, phase, _) in results.items():
        if name != "healthy":
            print(f"{name:40} costs {phase - base:+6.2f} s of test phase: {phase / base:.2f}x the healthy run's")
    ratio = results["sick + health checks"][1] / results["sick"][1]
    print(f"with the sick board, health checks / no checks: {ratio:.2f}x the test phase")


if __name__ == "__main__":
    main()
