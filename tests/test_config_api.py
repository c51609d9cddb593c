"""Upstream's config API, as upstream's code and conftest files reach for it: ``ExporterConfigV1Alpha1`` finds
``NAME.yaml`` in the user's exporters folder, then the system's; ``jumpstarter run NAME`` does the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from samples import EXAMPLES

from jumpstarter.client import connect
from jumpstarter.config.exporter import ExporterConfigV1Alpha1
from jumpstarter.errors import ConfigError

BOARD_YAML = (EXAMPLES / "jumpstarter-driver-demo" / "board.yaml").read_text()


@pytest.fixture
def folders(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The user's and the system's exporters folders, under tmp_path, as upstream's root conftest.py patches."""
    user, system = tmp_path / "user", tmp_path / "system"
    monkeypatch.setattr(ExporterConfigV1Alpha1, "BASE_PATH", user)
    monkeypatch.setattr(ExporterConfigV1Alpha1, "SYSTEM_CONFIG_PATH", system)
    return user, system


def test_defaults_are_upstreams():
    assert ExporterConfigV1Alpha1.SYSTEM_CONFIG_PATH == Path("/etc/jumpstarter/exporters")
    assert ExporterConfigV1Alpha1.BASE_PATH.parts[-2:] == ("jumpstarter", "exporters")


def test_load_finds_the_users_then_the_systems(folders):
    user, system = folders
    system.mkdir()
    (system / "lab.yaml").write_text(BOARD_YAML)
    (system / "notes.txt").write_text("not a config")
    loaded = ExporterConfigV1Alpha1.load("lab")
    assert (loaded.alias, loaded.path, loaded.metadata.name) == ("lab", system / "lab.yaml", "demo")
    assert list(loaded.export) == ["board"] and loaded.instantiate().children["board"].children["power"]
    user.mkdir()
    (user / "lab.yaml").write_text(BOARD_YAML.replace("name: demo\n", "name: mine\n", 1))
    assert ExporterConfigV1Alpha1.load("lab").metadata.name == "mine"  # the user's shadows the system's
    (system / "other.yaml").write_text(BOARD_YAML)
    listed = ExporterConfigV1Alpha1.list().items
    assert sorted((c.alias, c.metadata.name) for c in listed) == [("lab", "mine"), ("other", "demo")]
    assert ExporterConfigV1Alpha1.load_path(system / "other.yaml").path == system / "other.yaml"


def test_a_missing_or_bad_name_is_a_clear_error(folders):
    user, system = folders
    with pytest.raises(FileNotFoundError, match=f"no exporter config 'nope': neither {user}/nope.yaml nor {system}"):
        ExporterConfigV1Alpha1.load("nope")
    with pytest.raises(ConfigError, match="a name has no path separators"):
        ExporterConfigV1Alpha1.load("../etc/passwd")
    system.mkdir()
    (system / "bad.yaml").write_text("apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\nexport: [x]\n")
    with pytest.raises(ConfigError, match=rf"^{system}/bad.yaml:3: 'export' must be a mapping"):
        ExporterConfigV1Alpha1.load("bad")


def test_jumpstarter_run_name_serves_the_named_config(tmp_path, exporter_process):
    folder = tmp_path / "config" / "jumpstarter" / "exporters"
    folder.mkdir(parents=True)
    (folder / "lab.yaml").write_text(BOARD_YAML)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "JMP_CLIENT_CONFIG_HOME": ""}
    served = exporter_process("lab", "--listen", "127.0.0.1:0", env=env, cwd=tmp_path)
    with connect(served.address) as exporter:
        assert exporter.children["board"].children["power"].read() is False
    upstream_spelling = exporter_process("--exporter=lab", "--listen", "127.0.0.1:0", env=env, cwd=tmp_path)
    with connect(upstream_spelling.address) as exporter:
        assert list(exporter.children) == ["board"]
    missing = subprocess.run(
        [sys.executable, "-m", "jumpstarter", "run", "nope"],
        env={"XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert f"no exporter config 'nope': neither {folder}/nope.yaml nor /etc/jumpstarter/exporters/nope.yaml" in (
        missing.stderr
    )
