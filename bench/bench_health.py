"""What a sick board costs a run, with and without health checks (and with retry elsewhere).

A 32-test run on 4 boards (YAML exporters the plugin starts, one xdist worker per board): each test holds its board
for ``--test-seconds`` (0.2 s). One board is sick: its tests hang ``--sick-seconds`` (2 s, a call timing out) and
fail. Runs, one each, in this order:

- healthy: 4 good boards, no health checks (the baseline);
- sick: 3 good boards and the sick one, no health checks: the sick board fails the tests it gets, slowly;
- sick + health checks: a 20 ms health check per board takes the sick board out before its first test;
- sick + retry elsewhere 1: no health check; each failed test runs again on another board.

Printed: each run's wall time (pytest's own, from its last line), failures, and the ratios to the healthy run.
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


def run(folder: Path, args: list[str], checks: bool) -> tuple[float, str]:
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
    last = done.stdout.strip().splitlines()[-1]
    seconds = re.search(r" in ([\d.]+)s", last)
    if seconds is None:
        raise SystemExit(f"no duration in pytest's last line:\n{done.stdout}\n{done.stderr}")
    return float(seconds.group(1)), last.strip("= ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-seconds", type=float, default=0.2)
    parser.add_argument("--sick-seconds", type=float, default=2.0)
    options = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-health-") as temporary:
        for name, sick, checks, extra in (
            ("healthy", False, False, []),
            ("sick", True, False, []),
            ("sick + health checks", True, True, []),
            ("sick + retry elsewhere 1", True, False, ["--jumpstarter-retry-elsewhere", "1"]),
        ):
            folder = Path(temporary) / name.replace(" ", "_").replace("+", "")
            folder.mkdir()
            args = prepare(folder, sick, options.test_seconds, options.sick_seconds)
            results[name] = run(folder, args + extra, checks)
            print(f"{name:26} {results[name][0]:6.2f} s   {results[name][1]}", flush=True)
    base = results["healthy"][0]
    print(
        f"32 tests, 4 boards, 4 workers; a test holds its board {options.test_seconds} s, one on the sick board "
        f"hangs {options.sick_seconds} s and fails"
    )
    for name, (seconds, _) in results.items():
        if name != "healthy":
            print(f"{name:26} costs {seconds - base:+6.2f} s: {seconds / base:.2f}x the healthy run")
    ratio = results["sick + health checks"][0] / results["sick"][0]
    print(f"with the sick board, health checks / no checks: {ratio:.2f}x")


if __name__ == "__main__":
    main()
