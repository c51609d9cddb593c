"""Packaging: generated protos are current, and a driver package's ``jumpstarter`` requirement resolves to us."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

import jumpstarter

ROOT = Path(__file__).parents[1]


def test_generated_modules_match_the_proto_sources(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)], check=True)
    fresh = tmp_path / "jumpstarter" / "v1"
    committed = ROOT / "jumpstarter" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file())
    stale = [n for n in names if (fresh / n).read_bytes() != (committed / n).read_bytes()]
    assert not stale, f"jumpstarter/v1 is stale, run: python protos/generate.py ({', '.join(stale)})"


def test_the_installed_jumpstarter_is_this_project():
    assert Path(jumpstarter.__file__).resolve().is_relative_to(ROOT)
    assert importlib.metadata.version("jumpstarter").endswith("+hil.1")
    import jumpstarter_custom_driver

    # installed as a user installs it (not editable), yet it imports our runtime
    assert "site-packages" in Path(jumpstarter_custom_driver.__file__).parts
    assert jumpstarter_custom_driver.CustomDriver.__mro__[1].__module__ == "jumpstarter.driver.base"


def pip_would_install(project: Path) -> list[str]:
    """The distributions ``pip install PROJECT`` would install here (nothing fetched, nothing changed)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--no-index",
            "--no-build-isolation",
            "--report",
            "-",
            str(project),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return sorted(item["metadata"]["name"] for item in json.loads(done.stdout)["install"])


def test_installing_the_seed_package_does_not_replace_us():
    assert pip_would_install(ROOT / "examples" / "jumpstarter-custom-driver") == ["jumpstarter-custom-driver"]


@pytest.mark.parametrize("requirement", ["jumpstarter", "jumpstarter==0.9.0", "jumpstarter>=0.7,<1"])
def test_driver_requirements_written_for_upstream_resolve_to_us(tmp_path, requirement):
    (tmp_path / "some_driver").mkdir()
    (tmp_path / "some_driver" / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "some-driver"\nversion = "1.0"\ndependencies = ["{requirement}"]\n'
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
    )
    assert pip_would_install(tmp_path) == ["some-driver"]
