"""When upstream's jumpstarter was put over this runtime, or a driver package was made for another jumpstarter, the
CLI, the pytest plugin and the loaders say so, instead of failing far from the cause (jumpstarter.installed)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from jumpstarter.client.allow import load_client_class
from jumpstarter.client.base import DriverClient
from jumpstarter.config import ExporterConfig
from jumpstarter.errors import ClientClassError, ConfigError
from jumpstarter.installed import VERSION

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_it_compares_with_is_the_distributions():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == VERSION


def dist_info(folder: Path, name: str, version: str, *requires: str) -> None:
    """An installed distribution's metadata, as pip leaves it in site-packages."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", *(f"Requires-Dist: {r}\n" for r in requires)]
    (info / "METADATA").write_text("".join(lines))


def run_python(code: str, pythonpath: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_the_plugin_names_upstreams_jumpstarter_found_in_place_of_ours(tmp_path):
    """pytest_jumpstarter importable, but `jumpstarter` is upstream's package: a clear ImportError, not "cannot import
    name 'set_fallback'" from deep in the plugin."""
    (tmp_path / "jumpstarter").mkdir()
    (tmp_path / "jumpstarter" / "__init__.py").write_text("def configure_grpc_env():\n    pass\n")  # as upstream's
    done = run_python("import pytest_jumpstarter.plugin", tmp_path, tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pytest_jumpstarter (this runtime's pytest plugin, at "), done.stderr
    assert f"found a jumpstarter package that is not this runtime, at {tmp_path / 'jumpstarter'}: upstream's" in last
    assert "see docs/install.md#keeping-it" in last


@pytest.mark.parametrize("command", ["cli", "plugin"])
def test_an_upstream_jumpstarter_distribution_under_our_modules_is_named(tmp_path, command):
    """Our modules run (from a checkout on the path), but the jumpstarter distribution installed is upstream's:
    the CLI and the plugin say so before anything fails."""
    dist_info(tmp_path, "jumpstarter", "0.10.0", "jumpstarter-protocol==0.10.0")
    code = {
        "cli": "import sys; from jumpstarter.cli import main; sys.argv = ['jumpstarter', 'inspect']; main()",
        "plugin": "import pytest_jumpstarter.plugin",
    }[command]
    done = run_python(code, tmp_path, tmp_path)
    who = "jumpstarter" if command == "cli" else "pytest_jumpstarter"
    assert (
        f"{who}: warning: the installed jumpstarter distribution is 0.10.0, upstream's Jumpstarter, not this runtime "
        f"({VERSION}), whose modules run here from {ROOT / 'jumpstarter'}: a pip install replaced it" in done.stderr
    ), done.stderr


def test_nothing_is_said_when_all_is_ours(tmp_path):
    done = run_python("import pytest_jumpstarter.plugin", tmp_path, tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.fixture
def newer_driver_package(tmp_path, monkeypatch) -> Iterator[Path]:
    """An installed driver package made for jumpstarter 0.10.0, which imports a module this runtime lacks."""
    package = tmp_path / "jumpstarter_driver_newer"
    package.mkdir()
    (package / "__init__.py").write_text("from jumpstarter.driver.sideband import Sideband  # upstream 0.10's\n")
    dist_info(tmp_path, "jumpstarter-driver-newer", "0.10.0", "jumpstarter==0.10.0", "pytest; extra == 'dev'")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("jumpstarter_driver_newer", None)


def test_a_driver_made_for_another_jumpstarter_is_named_when_it_fails_to_load(newer_driver_package, write):
    path = write(
        "lab.yaml",
        """
        apiVersion: jumpstarter.dev/v1alpha1
        kind: ExporterConfig
        export:
          dut:
            type: jumpstarter_driver_newer.Newer
        """,
    )
    with pytest.raises(ConfigError) as info:
        ExporterConfig.load(path).check()
    message = str(info.value)
    assert message.startswith(f"{path}:5: export 'dut': type 'jumpstarter_driver_newer.Newer': importing"), message
    assert (
        "; jumpstarter-driver-newer 0.10.0 requires jumpstarter==0.10.0, which this runtime (jumpstarter "
        f"{VERSION}, upstream's 0.9.0 API) does not meet: it was made for another jumpstarter. Install its release "
        f"for jumpstarter 0.9.0 (pip install -c constraints.txt jumpstarter-driver-newer, the constraint holding "
        f"jumpstarter=={VERSION}: see docs/install.md#keeping-it)"
    ) in message


def test_a_client_class_made_for_another_jumpstarter_is_named_when_it_fails_to_load(newer_driver_package):
    with pytest.raises(ClientClassError) as info:
        load_client_class("jumpstarter_driver_newer.NewerClient", "dut", DriverClient, trusted=True)
    message = str(info.value)
    assert message.startswith("export 'dut': can't import client class 'jumpstarter_driver_newer.NewerClient'")
    assert "; jumpstarter-driver-newer 0.10.0 requires jumpstarter==0.10.0, which this runtime" in message


def test_the_page_the_messages_point_to_has_that_section():
    from jumpstarter.installed import KEEP

    page, _, section = KEEP.partition("#")
    headings = [line.lstrip("#").strip().lower().replace(" ", "-") for line in (ROOT / page).read_text().splitlines()]
    assert section in headings
