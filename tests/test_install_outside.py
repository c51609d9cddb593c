"""Installing this runtime into a project of one's own, as docs/install.md says, in a fresh virtualenv outside the
checkout: a built wheel with the `upstream` extra, a constraint that keeps it, two of upstream's driver packages
from PyPI, and a pytest file run against a YAML exporter. Then what keeps it: pip refuses a driver release made for
another jumpstarter (instead of replacing ours), and one put in anyway (--no-deps) is named when its class loads.

The third-party pins are those of the drivers' virtualenvs (tests/upstream_drivers/constraints.txt), so pip finds
the same wheels in its cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from upstream_peer import run_showing_progress

from jumpstarter.installed import VERSION

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "tests" / "upstream_drivers" / "constraints.txt"
TIMEOUT = 900  # a loaded machine, and PyPI

LAB = """\
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata:
  name: bench
export:
  power:
    type: jumpstarter_driver_power.driver.MockPower
  shell:
    type: jumpstarter_driver_shell.driver.Shell
    config:
      methods:
        greet: "echo hello $1"
"""

TESTS = """\
def test_power(power):
    power.on()
    power.off()
    assert [(r.voltage, r.current) for r in power.read()] == [(0.0, 0.0), (5.0, 2.0)]


def test_shell(shell, capfd):
    assert shell.greet("world") == 0
    assert "hello world" in capfd.readouterr().out
"""


def clean_env(venv: Path) -> dict[str, str]:
    """The venv's environment, as if activated, without what this pytest run set (its own venv, its plugins)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON", "COV_CORE_", "VIRTUAL_ENV"))}
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}", "VIRTUAL_ENV": str(venv)}
    return env | {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}


def test_installed_outside_the_checkout_it_runs_upstream_drivers_and_stays(
    tmp_path: Path, say: Callable[[str], None]
) -> None:
    folder = tmp_path / "my-project"  # outside the checkout, as a project of one's own
    folder.mkdir()
    assert not folder.resolve().is_relative_to(ROOT)
    venv, env = folder / ".venv", clean_env(folder / ".venv")
    python, pip = venv / "bin" / "python", venv / "bin" / "pip"

    def run(*command: str | Path, check: bool = True) -> subprocess.CompletedProcess:
        say(f"install outside: {' '.join(str(c) for c in command)}")
        done = run_showing_progress([str(c) for c in command], None, TIMEOUT, cwd=folder, env=env)
        assert done.returncode == 0 or not check, f"{command} failed:\n{done.stdout}\n{done.stderr}"
        return done

    # docs/install.md: the wheel (`pip wheel --no-deps -w dist CHECKOUT`; here with this venv's hatchling), a venv,
    # the wheel with the upstream extra, a constraint that keeps it, then upstream's driver packages.
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", "dist", ROOT)
    (wheel,) = (folder / "dist").glob("jumpstarter-*.whl")
    assert wheel.name == f"jumpstarter-{VERSION}-py3-none-any.whl"
    run(sys.executable, "-m", "venv", venv)
    (folder / "constraints.txt").write_text(f"jumpstarter=={VERSION}\n")
    keep: list[str | Path] = [
        "-c",
        "constraints.txt",
        "-c",
        PINS,
    ]  # PINS: the drivers' venvs' versions, found in pip's cache
    run(pip, "install", "--quiet", *keep, f"{wheel}[upstream]")
    run(pip, "install", "--quiet", *keep, "jumpstarter-driver-power", "jumpstarter-driver-shell")

    found = run(python, "-I", "-c", SHOW).stdout.split()
    assert Path(found[0]).is_relative_to(venv) and found[1:] == [VERSION, "0.9.0"], found
    assert "jumpstarter-protocol" not in run(pip, "list").stdout  # upstream's jumpstarter never came in

    (folder / "lab.yaml").write_text(LAB)
    (folder / "tests").mkdir()
    (folder / "tests" / "test_lab.py").write_text(TESTS)
    done = run(venv / "bin" / "pytest", "-p", "no:cacheprovider", "-q", "--exporter", "lab.yaml", "tests")
    assert "2 passed" in done.stdout, done.stdout

    # A driver release made for another jumpstarter: refused by pip with the constraint, instead of replacing ours.
    refused = run(pip, "install", "-c", "constraints.txt", "--dry-run", "jumpstarter-driver-power==0.8.1", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "ResolutionImpossible" in said, said
    assert "jumpstarter-driver-power 0.8.1 depends on jumpstarter==0.8.1" in said and f"jumpstarter=={VERSION}" in said
    # Put in anyway (--no-deps): loading its class names the mismatch.
    run(pip, "install", "--quiet", "--no-deps", "jumpstarter-driver-power==0.8.1")
    loaded = run(python, "-c", "from jumpstarter.config import ExporterConfig; ExporterConfig.load('lab.yaml').check()")
    assert (
        "export 'power': jumpstarter-driver-power 0.8.1 requires jumpstarter==0.8.1, which this runtime "
        f"(jumpstarter {VERSION}, upstream's 0.9.0 API) does not meet" in loaded.stderr
    ), loaded.stderr


SHOW = "import jumpstarter, importlib.metadata as m; print(jumpstarter.__file__, *map(m.version, ['jumpstarter', \
'jumpstarter-driver-power']))"
