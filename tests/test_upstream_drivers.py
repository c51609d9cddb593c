"""Upstream Jumpstarter's driver packages run unchanged on our runtime: their own tests say so.

tests/upstream_drivers/run.py runs the tests that each package of tests/upstream_drivers/packages.toml
ships in its wheel, once on our runtime (.venv-drivers) and once on upstream's jumpstarter==0.9.0
(.venv-drivers-upstream, whose results are kept until the pins change), after
scripts/setup-upstream-drivers.sh has set up both venvs (about a minute the first time). Every test that
passes on upstream's side must pass on ours. A machine where the venvs can't be made fails these tests
with the reason; they are never skipped.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from upstream_peer import run_showing_progress

HERE = Path(__file__).resolve().parent / "upstream_drivers"
RUNNER = HERE / "run.py"
PACKAGES = list(tomllib.loads((HERE / "packages.toml").read_text()))
RUN_TIMEOUT = 1800  # s: setup from scratch (about 1.5 min) and both sides (about 2 min), with a wide margin


def load_runner():
    spec = importlib.util.spec_from_file_location("upstream_drivers_run", RUNNER)
    assert spec is not None and spec.loader is not None, RUNNER
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # for its dataclasses
    spec.loader.exec_module(module)
    return module


run = load_runner()


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, say) -> dict:
    """run.py's report (its --json), made once per pytest run: under xdist, the first worker makes it
    and the others read it."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the basetemp that all the workers' own basetemps are in
    report_file = shared / "upstream-drivers.json"
    with open(shared / "upstream-drivers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not report_file.exists():
            out = shared / "upstream-drivers"
            command = [sys.executable, str(RUNNER), "--out", str(out), "--json", str(report_file) + ".tmp"]
            try:
                say(f"\n{RUNNER.name}: upstream's driver packages' own tests, on upstream and on ours (minutes):")
                done = run_showing_progress(command, lambda line: say(f"{RUNNER.name}: {line}"), RUN_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                pytest.fail(f"{RUNNER.name} did not finish in {RUN_TIMEOUT} s:\n{exc.stderr!s}", pytrace=False)
            if done.returncode not in (0, 1):  # 1: some regression, which the tests below tell one by one
                pytest.fail(
                    f"{RUNNER.name} exited with {done.returncode}:\n{done.stderr[-6000:]}{done.stdout}", pytrace=False
                )
            os.replace(str(report_file) + ".tmp", report_file)
    return json.loads(report_file.read_text())


def overview(report: dict) -> str:
    return f"\n{run.table(report, report['sides'])}\n(logs and JUnit XML: {report['out']})"


def test_packages_are_the_requirements():
    """packages.toml (what run.py runs) lists exactly the driver packages that requirements.txt installs."""
    text = (HERE / "requirements.txt").read_text()
    required = re.findall(r"^(jumpstarter-[a-z0-9-]+)==0\.9\.0", text, re.MULTILINE)
    assert sorted(required) == sorted(PACKAGES)


def test_deselected_tests_name_their_reason():
    deselected = run.load_deselected()
    assert deselected and all(deselected.values())
    run.load_packages(deselected)  # each names a test of a package of packages.toml


@pytest.mark.parametrize("package", PACKAGES)
def test_tests_ran_on_both_sides(comparison, package):
    """No empty run: each side collected and ran the package's tests, as many on ours as on upstream's (an
    import error on our side counts). A package for hardware this machine lacks (dutlink, yepkit, ...) may
    only skip, on both sides: its modules still import and its tests still collect on ours."""
    entry = comparison["packages"][package]
    ours = entry["ours"]
    ran = {side: s["passed"] + s["failed"] + s["skipped"] for side, s in entry.items()}
    problems = [f"{p['side']}: {p['problem']}" for p in comparison["problems"] if p["package"] == package]
    detail = "\n".join(problems) + overview(comparison)
    assert ran["upstream"] > 0, f"{package}: no test ran on upstream's side\n{detail}"
    assert ran["ours"] == ran["upstream"] and not ours["collect_errors"], (
        f"{package}: our side ran {ran['ours']} tests (upstream's {ran['upstream']}), "
        f"with {ours['collect_errors']} collection errors\n{detail}"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_upstream_side_passes(comparison, package):
    """Each test run on upstream's side passes there: one that doesn't here is a fault of this machine,
    to fix, or to deselect with its reason in tests/upstream_drivers/deselect.txt."""
    failures = [f"  {f['test']}: {f['error']}" for f in comparison["upstream_failures"] if f["package"] == package]
    failures += [
        f"  {p['problem']}" for p in comparison["problems"] if p["package"] == package and p["side"] == "upstream"
    ]
    assert not failures, f"{package}: fails on upstream's own side:\n" + "\n".join(failures) + overview(comparison)


@pytest.mark.parametrize("package", PACKAGES)
def test_what_passes_on_upstream_passes_on_ours(comparison, package):
    regressions = [r for r in comparison["regressions"] if r["package"] == package]
    problems = [p["problem"] for p in comparison["problems"] if p["package"] == package and p["side"] == "ours"]
    assert not regressions, (
        f"{package}: {len(regressions)} tests pass on upstream's jumpstarter 0.9.0, not on ours:\n"
        + "\n".join(f"  {r['test']} [{r['ours']}]: {r['error']}" for r in regressions)
        + "".join(f"\nour run: {problem}" for problem in problems)
        + overview(comparison)
    )
