"""Run upstream Jumpstarter's driver packages' own tests against our runtime and against upstream's; compare.

    python tests/upstream_drivers/run.py [--packages NAME,...] [--jobs N] [--json FILE] ...

scripts/setup-upstream-drivers.sh (run first, quick when nothing changed) makes two virtualenvs holding
the packages of requirements.txt: .venv-drivers with this checkout as `jumpstarter`, and
.venv-drivers-upstream with upstream's jumpstarter==0.9.0. For each package of packages.toml and each
venv, this runs the package's own tests from its installed folder (site-packages/MODULE) with the
package's own pytest settings (packages.toml), a per-test timeout and a JUnit XML report, minus the
node ids of deselect.txt (on both sides). Then it prints, per package, how many tests passed, failed
and were skipped on each side, and every test that passes on upstream's side but not on ours.

Upstream's results only change with the pins, the settings or the deselected tests: a package's run
is kept in .venv-drivers-upstream/results/ under a key made of those, and reused (--rerun-upstream
runs it anyway). A run of upstream's side with a failure is not kept.

Exit status: 0 when every test that passes on upstream's side passes on ours, 1 when one doesn't,
2 when the harness itself can't run (a venv can't be set up, bad arguments).

Standard library only: it runs under any Python 3.11+, typically the project's .venv.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SETUP = ROOT / "scripts" / "setup-upstream-drivers.sh"
PACKAGES = HERE / "packages.toml"
DESELECT = HERE / "deselect.txt"
PINS = (HERE / "requirements.txt", HERE / "constraints.txt")
SIDES = ("upstream", "ours")

# s, pytest-timeout's for each test: the slowest takes about 3 s here, on either side, and the ones that
# hang (deselect.txt) hang for minutes.
TEST_TIMEOUT = 60
PACKAGE_TIMEOUT = 900  # s for one package's whole run; then it is interrupted (SIGINT), then killed

# pytest runs at once. Their tests mostly wait (sockets, sleeps), so more runs than the 2 cores pay: here
# both sides took 85 s + 53 s one at a time, 77 s with 2 at once, 51 s with 3, 41 s with 4 (the same results
# each time); our side alone (upstream's kept) 86 s, 45 s, 30 s.
JOBS = 3

CACHE_FORMAT = 2  # bump when a change here changes what a run of upstream's side gives


# Upstream runs a package that has no pytest settings of its own with its workspace's (python/pyproject.toml),
# and so under the workspace's conftest.py (python/conftest.py), whose fixtures its doctests use (`serve`,
# `run`, a configuration folder of each test's own). run.py loads upstream's file, kept as it is in
# upstream_root_conftest.py.txt (from github.com/jumpstarter-dev/jumpstarter, python/conftest.py at commit
# ba87d419095dd260d0a06395e079dcfc1c630516), as a plugin of that run on both sides.
WORKSPACE_PLUGIN = (HERE / "upstream_root_conftest.py.txt").read_text()
WORKSPACE_PLUGIN_NAME = "jumpstarter_upstream_workspace"


class HarnessError(RuntimeError):
    """The comparison can't be made: a venv can't be set up, a package can't be found."""


def venv_paths() -> dict[str, Path]:
    return {
        "ours": ROOT / os.environ.get("JUMPSTARTER_DRIVERS_VENV", ".venv-drivers"),
        "upstream": ROOT / os.environ.get("JUMPSTARTER_DRIVERS_UPSTREAM_VENV", ".venv-drivers-upstream"),
    }


# Inputs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    name: str
    module: str
    workspace: bool  # runs with upstream's workspace settings and conftest.py (WORKSPACE_PLUGIN)
    addopts: tuple[str, ...]
    ini: tuple[tuple[str, str], ...]
    deselect: tuple[str, ...]  # node ids, relative to site-packages (MODULE/file.py::test)
    workers: int = 0  # pytest-xdist workers for its tests (packages.toml `workers`), on both sides; 0: none


def load_deselected(path: Path = DESELECT) -> dict[str, str]:
    """deselect.txt: `NODE_ID  # reason` a line; every node id needs its reason."""
    deselected: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        node_id, _, reason = line.partition("#")
        node_id, reason = node_id.strip(), reason.strip()
        if not reason or " " in node_id:
            raise HarnessError(f"{path.name}:{number}: expected `NODE_ID  # reason`, got: {raw}")
        deselected[node_id] = reason
    return deselected


def load_packages(deselected: dict[str, str]) -> list[Package]:
    packages = []
    for name, spec in tomllib.loads(PACKAGES.read_text()).items():
        module = spec["module"]
        mine = tuple(n for n in deselected if n.split("/", 1)[0] == module)
        ini = tuple((k, str(v)) for k, v in spec.get("ini", {}).items())
        if spec.get("settings") not in ("package", "workspace"):
            raise HarnessError(f'{PACKAGES.name}: {name}: settings must be "package" or "workspace"')
        workspace = spec["settings"] == "workspace"
        workers = spec.get("workers", 0)
        if not isinstance(workers, int) or workers < 0:
            raise HarnessError(f"{PACKAGES.name}: {name}: workers must be a whole number, got {workers!r}")
        packages.append(Package(name, module, workspace, tuple(spec.get("addopts", ())), ini, mine, workers))
    known = {p.module for p in packages}
    strays = [n for n in deselected if n.split("/", 1)[0] not in known]
    if strays:
        raise HarnessError(f"{DESELECT.name} names tests of no package in {PACKAGES.name}: {', '.join(strays)}")
    return packages


@contextmanager
def venvs_locked(sides: list[str]) -> Iterator[None]:
    """Hold the venvs' locks (those of scripts/setup-upstream-drivers.sh): no other run, nor a re-install,
    while this one uses them (some tests listen on fixed ports, so two runs at once would trip each other)."""
    venvs = venv_paths()
    with ExitStack() as stack:
        for side in ("upstream", "ours"):  # always in this order
            if side in sides:
                venvs[side].parent.mkdir(parents=True, exist_ok=True)
                lock = stack.enter_context(open(f"{venvs[side]}.lock", "w"))  # noqa: SIM115
                fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def setup(sides: list[str]) -> None:
    """Run scripts/setup-upstream-drivers.sh, under the locks this process already holds."""
    which = "both" if len(sides) == 2 else sides[0]
    env = {**os.environ, "JUMPSTARTER_DRIVERS_LOCKED": "1"}
    try:
        process = subprocess.Popen(
            [str(SETUP), which],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
    except OSError as exc:
        raise HarnessError(f"{SETUP.name}: {exc}") from None
    said = []
    assert process.stdout is not None  # a PIPE
    for line in process.stdout:
        if "is ignored: it is neither" not in line:  # pip, about this machine's extra index folders
            said.append(line.rstrip("\n"))
            print(line, end="", file=sys.stderr, flush=True)
    if process.wait() != 0:
        raise HarnessError(f"{SETUP.name} {which} exited with {process.returncode}:\n" + "\n".join(said[-40:]))


# One package on one side -------------------------------------------------------------------------


@dataclass
class Outcome:
    outcome: str  # passed, failed, error, skipped
    message: str = ""  # the first line of the failure, error or skip reason


@dataclass
class Run:
    package: str
    side: str
    tests: dict[str, Outcome] = field(default_factory=dict)
    collect_errors: dict[str, str] = field(default_factory=dict)  # file -> the error's first line
    collect_skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was skipped whole
    exit_code: int | None = None
    problem: str = ""  # why the run gave no (or partial) results, with the end of its output
    seconds: float = 0.0
    cached: bool = False
    log: str = ""
    flaky: dict[str, str] = field(default_factory=dict)  # failed in the run, passed run again alone: the failure

    def count(self, *outcomes: str) -> int:
        return sum(o.outcome in outcomes for o in self.tests.values())

    @property
    def summary(self) -> dict[str, int]:
        return {
            "passed": self.count("passed"),
            "failed": self.count("failed", "error"),
            "skipped": self.count("skipped"),
            "collect_errors": len(self.collect_errors),
        }


def site_packages(python: Path, modules: list[str]) -> dict[str, str]:
    """Where ``python`` finds each module's folder (without importing it: ours may not import yet)."""
    code = (
        "import importlib.util, json, sys\n"
        "found = {}\n"
        "for m in sys.argv[1:]:\n"
        "    spec = importlib.util.find_spec(m)\n"
        "    found[m] = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None\n"
        "print(json.dumps(found))\n"
    )
    done = subprocess.run(
        [str(python), "-I", "-c", code, *modules], capture_output=True, text=True, cwd="/", check=False
    )
    if done.returncode != 0:
        raise HarnessError(f"{python} can't look up the driver packages:\n{done.stderr}")
    found = json.loads(done.stdout)
    missing = [m for m, where in found.items() if where is None]
    if missing:
        raise HarnessError(f"{python.parent.parent} has no {', '.join(missing)}: run {SETUP.relative_to(ROOT)}")
    return found


def pytest_command(
    python: Path, package: Package, folder: Path, ini: Path, junit: Path, timeout: int, only: tuple[str, ...] = ()
) -> list[str]:
    """The package's tests (``only``: just these node ids) from its installed folder, with its settings."""
    targets = [str(folder.parent / nid) for nid in only] or [str(folder)]
    command = [str(python), "-m", "pytest", *targets, "-c", str(ini)]
    command += ["--rootdir", str(folder.parent), "--confcutdir", str(folder)]  # node ids: MODULE/file.py::test
    command += ["-p", "no:cacheprovider", f"--timeout={timeout}", f"--junitxml={junit}"]
    # A test module that can't be imported (on our side, a name we lack) stops only its own tests.
    command += ["--continue-on-collection-errors"]
    if package.workspace:
        command += ["-p", WORKSPACE_PLUGIN_NAME]
    for node_id in package.deselect:
        if "::" in node_id:
            command += ["--deselect", node_id]
        else:  # a whole file: not even imported (one that fails at import would still count as an error)
            command += ["--ignore", str(folder.parent / node_id)]
    if package.workers and not only:
        command += ["-n", str(package.workers)]
    return command


def ini_text(package: Package) -> str:
    lines = ["[pytest]", "addopts = " + " ".join(package.addopts)]
    lines += [f"{key} = {value}" for key, value in package.ini]
    lines += ["junit_family = xunit1"]  # its testcases name their file, for the node ids
    return "\n".join(lines) + "\n"


def run_env(python: Path, home: Path) -> dict[str, str]:
    """The venv's environment, as if activated, without what our own pytest run set; a home of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "PYTHON", "COV_CORE_", "VIRTUAL_ENV", "XDG_")) and k != "COVERAGE_PROCESS_START"
    }
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    env["HOME"] = str(home)  # jumpstarter's config (~/.config/jumpstarter) and anything else a test writes
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "160"
    return env


def run_pytest(
    side: str,
    python: Path,
    package: Package,
    folder: Path,
    out: Path,
    timeout: int,
    package_timeout: int,
    only: tuple[str, ...] = (),
) -> Run:
    workdir = out / side / (package.name + ("-again" if only else ""))
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "home").mkdir(parents=True)
    (workdir / "cwd").mkdir()
    ini, junit, log = workdir / "pytest.ini", workdir / "junit.xml", workdir / "pytest.log"
    ini.write_text(ini_text(package))
    env = run_env(python, workdir / "home")
    if package.workspace:
        (workdir / "plugins").mkdir()
        (workdir / "plugins" / f"{WORKSPACE_PLUGIN_NAME}.py").write_text(WORKSPACE_PLUGIN)
        env["PYTHONPATH"] = str(workdir / "plugins")
    command = pytest_command(python, package, folder, ini, junit, timeout, only)
    run = Run(package.name, side, log=str(log))
    started = time.monotonic()
    with log.open("w") as output:
        output.write(" ".join(command) + "\n\n")
        output.flush()
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir / "cwd",
            env=env,
            start_new_session=True,  # what its tests start ends with it
        )
        try:
            run.exit_code = process.wait(package_timeout)
        except subprocess.TimeoutExpired:
            run.problem = f"did not finish in {package_timeout} s: interrupted"
            end_group(process)
            run.exit_code = process.returncode
    run.seconds = round(time.monotonic() - started, 1)
    end_group(process, grace=5)  # what a test left running in its session (the run is over)
    if junit.exists():
        try:
            run.tests, run.collect_errors, run.collect_skipped = parse_junit(junit, folder.parent)
        except ET.ParseError as exc:
            run.problem = (run.problem + "; " if run.problem else "") + f"unreadable JUnit XML: {exc}"
    else:
        run.problem = (run.problem + "; " if run.problem else "") + "no JUnit XML"
    if run.exit_code not in (0, 1) and not run.problem:  # 2 interrupted, 3 internal error, 4 usage, 5 no tests
        run.problem = f"pytest exited with {run.exit_code}"
    if run.problem:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        run.problem += "; the end of its output:\n    " + "\n    ".join(tail)
    return run


def end_group(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGINT to the process group (pytest then writes its report), SIGKILL after ``grace`` s."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(wait)
            if process.returncode is not None and sig == signal.SIGINT:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # its children, if any are left
                except (ProcessLookupError, PermissionError):
                    pass
                return
        except subprocess.TimeoutExpired:
            continue


# JUnit XML ------------------------------------------------------------------------------------------


def first_line(element: ET.Element) -> str:
    """The line that says what went wrong: the message, else the exception line (`E   ...`) of the text."""
    message = (element.get("message") or "").strip()
    text = element.text or ""
    lines = text.splitlines()
    # A doctest's report starts with the numbered lines of its example.
    unexpected = [line for line in lines if line.startswith("UNEXPECTED EXCEPTION: ")]
    if unexpected:
        return "doctest: " + unexpected[0].removeprefix("UNEXPECTED EXCEPTION: ")
    if any(line.endswith(": DocTestFailure") for line in lines):
        got = lines[lines.index("Got:") + 1 :] if "Got:" in lines else ["nothing"]
        return f"doctest: its output differs; got: {got[0].strip() if got else ''}"
    if message and message != "collection failure":
        return message.splitlines()[0]
    raised = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    for line in raised:
        if "Error" in line or "Exception" in line:
            return line
    if raised:
        return raised[0]
    return next((line.strip() for line in text.splitlines() if line.strip()), message)


def node_id(case: ET.Element, root: Path) -> str:
    """The pytest node id of a JUnit testcase (xunit1: classname is `dotted.module.Class`, file is its file)."""
    classname, name = case.get("classname", ""), case.get("name", "")
    parts = classname.split(".") if classname else []
    # The module is the longest prefix of classname that is a file (the file attribute names where the
    # function was defined, which differs for a test inherited from another module's class).
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (root / path).is_file():
            return "::".join([path, *parts[cut:], name])
    file = case.get("file")
    return "::".join([file, name]) if file else "::".join([*parts, name])


RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def parse_junit(path: Path, root: Path) -> tuple[dict[str, Outcome], dict[str, str], dict[str, str]]:
    """The outcome of each test by node id; the modules that failed to import and those skipped whole."""
    tests: dict[str, Outcome] = {}
    collect_errors: dict[str, str] = {}
    collect_skipped: dict[str, str] = {}
    for case in ET.parse(path).iter("testcase"):
        kinds = {child.tag: child for child in case if child.tag in ("failure", "error", "skipped")}
        if "error" in kinds and kinds["error"].get("message") == "collection failure":
            file = case.get("file") or case.get("name", "").replace(".", "/") + ".py"
            collect_errors[file] = first_line(kinds["error"])
            continue
        if case.get("classname") == "pytest" and case.get("name") == "internal":
            collect_errors["<internal>"] = first_line(kinds.get("error", case))
            continue
        if "error" in kinds:
            outcome = Outcome("error", first_line(kinds["error"]))
        elif "failure" in kinds:
            outcome = Outcome("failed", first_line(kinds["failure"]))
        elif "skipped" in kinds:
            if kinds["skipped"].get("message") == "collection skipped":  # no test of the module is listed
                collect_skipped[case.get("file") or case.get("name") or ""] = (kinds["skipped"].text or "").strip()
                continue
            outcome = Outcome("skipped", first_line(kinds["skipped"]))
        else:
            outcome = Outcome("passed")
        nid = node_id(case, root)
        if nid not in tests or RANK[outcome.outcome] > RANK[tests[nid].outcome]:
            tests[nid] = outcome  # a test reported twice (a call failure and a teardown error): the worst
    return tests, collect_errors, collect_skipped


# Upstream's cache ----------------------------------------------------------------------------------


def cache_key(package: Package, python: Path, timeout: int) -> str:
    digest = hashlib.sha256()
    for pin in PINS:
        digest.update(pin.read_bytes())
    spec = [
        CACHE_FORMAT,
        package.module,
        package.workspace,
        WORKSPACE_PLUGIN,
        package.addopts,
        package.ini,
        sorted(package.deselect),
        package.workers,
        timeout,
    ]
    spec += [platform.machine(), os.path.realpath(python)]
    digest.update(json.dumps(spec).encode())
    return digest.hexdigest()


def cached_run(venv: Path, package: Package, key: str) -> Run | None:
    path = venv / "results" / f"{package.name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    run = Run(**{k: v for k, v in data["run"].items() if k != "tests"})
    run.tests = {nid: Outcome(**o) for nid, o in data["run"]["tests"].items()}
    run.cached = True
    return run


def keep_run(venv: Path, run: Run, key: str) -> None:
    """Keep a complete, clean run of upstream's side (a failing one runs again next time)."""
    if run.problem or run.count("failed", "error") or run.collect_errors or not run.tests:
        return
    folder = venv / "results"
    folder.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
        json.dump({"key": key, "run": asdict(run)}, f, indent=1)
    os.replace(f.name, folder / f"{run.package}.json")


# Both sides -----------------------------------------------------------------------------------------


def run_all(
    packages: list[Package], sides: list[str], out: Path, jobs: int, timeout: int, package_timeout: int, rerun: bool
) -> dict[str, dict[str, Run]]:
    venvs = venv_paths()
    pythons = {side: venvs[side] / "bin" / "python" for side in sides}
    folders = {side: site_packages(pythons[side], [p.module for p in packages]) for side in sides}
    results: dict[str, dict[str, Run]] = {p.name: {} for p in packages}
    todo: list[tuple[str, Package, str]] = []
    for package in packages:
        for side in sides:
            key = cache_key(package, pythons[side], timeout) if side == "upstream" else ""
            cached = None if rerun or side != "upstream" else cached_run(venvs[side], package, key)
            if cached:
                results[package.name][side] = cached
            else:
                todo.append((side, package, key))

    # Never the same package on both sides at once (some of its tests listen on fixed ports); the longest
    # runs first (as long as upstream's last run of the package took), so that the last ones are short.
    estimate = {
        p.name: getattr(results[p.name].get("upstream"), "seconds", 0) or last_seconds(venvs, p) for p in packages
    }
    pending = sorted(todo, key=lambda t: (-estimate[t[1].name], t[0] != "upstream"))
    running: set[str] = set()
    ready = threading.Condition()
    failures: list[BaseException] = []

    def worker() -> None:
        while True:
            with ready:
                while True:
                    if not pending or failures:
                        return
                    task = next((t for t in pending if t[1].name not in running), None)
                    if task:
                        pending.remove(task)
                        running.add(task[1].name)
                        break
                    ready.wait()
            side, package, key = task
            try:
                folder = Path(folders[side][package.module])
                run = run_pytest(side, pythons[side], package, folder, out, timeout, package_timeout)
                if side == "upstream":
                    keep_run(venvs[side], run, key)
                results[package.name][side] = run
                print(
                    f"  {side:8} {package.name:32} {run.seconds:6.1f} s  {describe(run)}", file=sys.stderr, flush=True
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                failures.append(exc)
            finally:
                with ready:
                    running.discard(package.name)
                    ready.notify_all()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    if "ours" in sides and "upstream" in sides:
        again(results, packages, pythons, folders, out, timeout, package_timeout)
    return results


def again(
    results: dict[str, dict[str, Run]],
    packages: list[Package],
    pythons: dict[str, Path],
    folders: dict[str, dict[str, str]],
    out: Path,
    timeout: int,
    package_timeout: int,
) -> None:
    """Run once more, alone and one package at a time, the tests that failed on upstream's side, then those that
    passed upstream but failed on ours. Some of upstream's tests race for ports or time under the load of the
    whole run (a "free" port another test's server takes meanwhile, a server given seconds to start): one that
    passes alone is kept as flaky (``Run.flaky``), on either side alike; one that fails again stays a failure
    (upstream's) or a regression (ours)."""
    for package in packages:
        sides = results[package.name]
        upstream, ours = sides.get("upstream"), sides.get("ours")
        if not (upstream and ours):
            continue
        broken = ("failed", "error")
        failed = tuple(nid for nid, outcome in sorted(upstream.tests.items()) if outcome.outcome in broken)
        _alone("upstream", upstream, failed, pythons, folders, package, out, timeout, package_timeout)
        failed = tuple(
            nid
            for nid, outcome in sorted(upstream.tests.items())
            if outcome.outcome == "passed" and (ours.tests.get(nid) or Outcome("not run")).outcome in broken
        )
        _alone("ours", ours, failed, pythons, folders, package, out, timeout, package_timeout)


def _alone(
    side: str,
    run: Run,
    failed: tuple[str, ...],
    pythons: dict[str, Path],
    folders: dict[str, dict[str, str]],
    package: Package,
    out: Path,
    timeout: int,
    package_timeout: int,
) -> None:
    """``failed`` tests of ``run`` once more on ``side``, alone: those that pass now are flaky, not failures."""
    if not failed:
        return
    folder = Path(folders[side][package.module])
    alone = run_pytest(side, pythons[side], package, folder, out, timeout, package_timeout, failed)
    for nid in failed:
        if (alone.tests.get(nid) or Outcome("not run")).outcome == "passed":
            run.flaky[nid] = run.tests[nid].message
            run.tests[nid] = alone.tests[nid]
    print(f"  {side:8} {package.name:32} again, alone: {len(run.flaky)} of {len(failed)} passed", file=sys.stderr)


def last_seconds(venvs: dict[str, Path], package: Package) -> float:
    """How long upstream's side of ``package`` took when it was last kept (0 if never)."""
    try:
        return float(json.loads((venvs["upstream"] / "results" / f"{package.name}.json").read_text())["run"]["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def describe(run: Run) -> str:
    s = run.summary
    text = f"{s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped"
    if s["collect_errors"]:
        text += f", {s['collect_errors']} collection errors"
    if run.cached:
        text += " (kept from an earlier run)"
    if run.problem:
        text += " -- " + run.problem.splitlines()[0]
    return text


# The comparison -------------------------------------------------------------------------------------


def compare(results: dict[str, dict[str, Run]]) -> dict:
    """Per package, both sides' counts; every test passing upstream and not on ours (a regression)."""
    report: dict = {"packages": {}, "regressions": [], "upstream_failures": [], "only_ours_pass": [], "problems": []}
    for name, sides in results.items():
        entry = {side: {**run.summary, "seconds": run.seconds, "cached": run.cached} for side, run in sides.items()}
        report["packages"][name] = entry
        for side, run in sides.items():
            if run.problem:
                report["problems"].append({"package": name, "side": side, "problem": run.problem})
            for file, error in run.collect_errors.items():
                if side == "upstream":
                    report["upstream_failures"].append({"package": name, "test": file, "error": error})
        upstream, ours = sides.get("upstream"), sides.get("ours")
        if upstream:
            for nid, outcome in sorted(upstream.tests.items()):
                if outcome.outcome in ("failed", "error"):
                    report["upstream_failures"].append({"package": name, "test": nid, "error": outcome.message})
        if not (upstream and ours):
            continue
        for nid, outcome in sorted(upstream.tests.items()):
            if outcome.outcome != "passed":
                continue
            theirs = ours.tests.get(nid)
            if theirs is None:
                file = nid.split("::", 1)[0]
                error = ours.collect_errors.get(file, "")
                if not error and file in ours.collect_skipped:
                    error = f"its module was skipped: {ours.collect_skipped[file]}"
                error = error or (ours.problem.splitlines()[0] if ours.problem else "")
                report["regressions"].append({"package": name, "test": nid, "ours": "not run", "error": error})
            elif theirs.outcome != "passed":
                report["regressions"].append(
                    {"package": name, "test": nid, "ours": theirs.outcome, "error": theirs.message}
                )
        for nid, outcome in sorted(ours.tests.items()):
            if outcome.outcome == "passed" and (upstream.tests.get(nid) or Outcome("not run")).outcome != "passed":
                report["only_ours_pass"].append({"package": name, "test": nid})
        report.setdefault("flaky", []).extend(
            {"package": name, "side": side, "test": nid, "error": error}
            for side, run in (("upstream", upstream), ("ours", ours))
            for nid, error in sorted(run.flaky.items())
        )
    return report


def table(report: dict, sides: list[str]) -> str:
    width = max([len("package"), *map(len, report["packages"])])
    head = f"{'package':{width}} | " + " | ".join(f"{s + ' passed/failed/skipped':>30}" for s in sides)
    lines = [head, "-" * len(head)]
    totals = {s: [0, 0, 0] for s in sides}
    for name, entry in report["packages"].items():
        cells = []
        for side in sides:
            s = entry.get(side)
            if s is None:
                cells.append(f"{'-':>30}")
                continue
            for i, key in enumerate(("passed", "failed", "skipped")):
                totals[side][i] += s[key]
            cell = f"{s['passed']}/{s['failed']}/{s['skipped']}"
            if s["collect_errors"]:
                cell += f" +{s['collect_errors']} coll.err"
            cells.append(f"{cell:>30}")
        lines.append(f"{name:{width}} | " + " | ".join(cells))
    lines.append("-" * len(head))
    lines.append(f"{'total':{width}} | " + " | ".join(f"{'/'.join(map(str, totals[s])):>30}" for s in sides))
    return "\n".join(lines)


def render(report: dict, sides: list[str]) -> str:
    parts = [table(report, sides)]
    if report["upstream_failures"]:
        parts.append(
            f"\nFailing on upstream's side ({len(report['upstream_failures'])}; fix the environment or "
            f"deselect with a reason in {DESELECT.relative_to(ROOT)}):"
        )
        parts += [f"  {f['test']}: {f['error']}" for f in report["upstream_failures"]]
    for problem in report["problems"]:
        parts.append(f"\n{problem['side']} {problem['package']}: {problem['problem']}")
    if "ours" in sides and "upstream" in sides:
        flaky = report.get("flaky", [])
        if flaky:
            parts.append(f"\nFailed in the whole run, passed when run again alone ({len(flaky)}):")
            parts += [f"  {r['side']}: {r['test']}: {r['error']}" for r in flaky]
        regressions = report["regressions"]
        if regressions:
            parts.append(f"\nPasses on upstream's side, not on ours ({len(regressions)}):")
            parts += [f"  {r['test']} [{r['ours']}]: {r['error']}" for r in regressions]
        else:
            parts.append("\nEvery test that passes on upstream's side passes on ours.")
        if report["only_ours_pass"]:
            parts.append(f"\nPasses on ours only ({len(report['only_ours_pass'])}):")
            parts += [f"  {r['test']}" for r in report["only_ours_pass"]]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", help="comma-separated distribution names (default: all of packages.toml)")
    parser.add_argument("--side", choices=["both", *SIDES], default="both")
    parser.add_argument("--jobs", type=int, default=JOBS, help=f"pytest runs at once (default {JOBS})")
    parser.add_argument("--timeout", type=int, default=TEST_TIMEOUT, help="seconds for one test (pytest-timeout)")
    parser.add_argument("--package-timeout", type=int, default=PACKAGE_TIMEOUT, help="seconds for one package")
    parser.add_argument("--out", type=Path, help="where logs and JUnit XML go (default: a temporary folder, kept)")
    parser.add_argument("--json", type=Path, help="write the comparison as JSON here")
    parser.add_argument("--no-setup", action="store_true", help=f"don't run {SETUP.name} first")
    parser.add_argument("--rerun-upstream", action="store_true", help="run upstream's side even if kept")
    args = parser.parse_args(argv)
    sides = list(SIDES) if args.side == "both" else [args.side]
    try:
        packages = load_packages(load_deselected())
        if args.packages:
            wanted = [n.strip() for n in args.packages.split(",") if n.strip()]
            unknown = sorted(set(wanted) - {p.name for p in packages})
            if unknown:
                raise HarnessError(f"not in {PACKAGES.name}: {', '.join(unknown)}")
            packages = [p for p in packages if p.name in wanted]
        timings = {}
        with venvs_locked(sides):
            if not args.no_setup:
                started = time.monotonic()
                setup(sides)
                timings["setup"] = round(time.monotonic() - started, 1)
                print(f"setup: {timings['setup']} s", file=sys.stderr)
            out = args.out or Path(tempfile.mkdtemp(prefix="upstream-drivers-"))
            out.mkdir(parents=True, exist_ok=True)
            print(f"logs and JUnit XML: {out}", file=sys.stderr)
            started = time.monotonic()
            results = run_all(packages, sides, out, args.jobs, args.timeout, args.package_timeout, args.rerun_upstream)
            timings["tests"] = round(time.monotonic() - started, 1)
            print(f"tests: {timings['tests']} s", file=sys.stderr)
    except HarnessError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    report = compare(results)
    report["sides"] = sides
    report["timings"] = timings
    report["out"] = str(out)
    report["deselected"] = load_deselected()
    report["logs"] = {name: {side: run.log for side, run in sides_.items()} for name, sides_ in results.items()}
    print(render(report, sides))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if report["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
