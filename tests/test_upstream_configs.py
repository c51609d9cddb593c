"""The example ExporterConfigs of upstream's 0.9.0 driver packages load here as they load upstream.

tests/upstream_drivers/configs/ keeps every standalone example ExporterConfig that upstream's 0.9.0 driver
packages ship in their sources (their sdists' examples/, example/ and demo/ folders, and the whole ones of
their READMEs, written out as README.md.N.yaml), under the package's module name. load_configs.py loads each
with upstream's own loader in .venv-drivers-upstream and with ours in .venv-drivers, the driver classes
imported on both sides; every config upstream accepts, ours accepts too, but for the refusals listed below,
each with the reason it is right.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from upstream_peer import run_showing_progress

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup-upstream-drivers.sh"
CONFIGS = ROOT / "tests" / "upstream_drivers" / "configs"
LOADER = ROOT / "tests" / "upstream_drivers" / "load_configs.py"

# Configs upstream's loader accepts and ours refuses, rightly: file -> (the words our error must have, why).
# (Upstream's loader refuses two more, and so does ours: someip's file holds two YAML documents, and xcp's
# `endpoint:` holds the export tree.) None of them uses `hooks:`.
RIGHT_REFUSALS: dict[str, tuple[str, str]] = {
    "jumpstarter_driver_tftp/examples/exporter.yaml": (
        "type 'jumpstarter_driver_tftp.driver.TftpServer' is not a Driver subclass",
        "TftpServer is the package's TFTP protocol server, not its driver (Tftp): upstream only imports the class "
        "at load, and its exporter fails to make it (TftpServer takes none of a driver's arguments)",
    ),
    "jumpstarter_driver_vnc/examples/exporter.yaml": (
        "export 'vnc': unknown key 'default_encrypt'",
        "default_encrypt is a parameter of the Vnc driver and belongs under `config:`; upstream's pydantic model "
        "drops the unknown key silently, so the setting is lost there",
    ),
}


@pytest.fixture(scope="module")
def loaded(say) -> dict[str, dict[str, str | None]]:
    """Each side's verdict on each config: None (loaded) or its error."""
    done = run_showing_progress(["bash", SETUP, "both"], say, 1200, cwd=ROOT)
    if done.returncode != 0:
        pytest.fail(f"{SETUP.name} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    verdicts = {}
    for venv in (".venv-drivers", ".venv-drivers-upstream"):
        ran = subprocess.run(
            [ROOT / venv / "bin" / "python", LOADER, CONFIGS], capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        assert ran.returncode == 0, ran.stderr
        report = json.loads(ran.stdout)
        verdicts[report["side"]] = report["results"]
    return verdicts


def test_every_config_upstream_loads_loads_here(loaded):
    upstream, ours = loaded["upstream"], loaded["ours"]
    assert sorted(upstream) == sorted(ours) and len(upstream) >= 38
    accepted = [name for name, error in upstream.items() if error is None]
    wrong = {name: ours[name] for name in accepted if ours[name] is not None and name not in RIGHT_REFUSALS}
    assert not wrong, json.dumps(wrong, indent=1)
    for name, (words, _why) in RIGHT_REFUSALS.items():
        assert upstream[name] is None, f"{name}: upstream refuses it too now ({upstream[name]}): drop it from the list"
        assert ours[name] is not None and words in ours[name], f"{name}: {ours[name]}"


def test_what_upstream_refuses_is_refused_here(loaded):
    """A config upstream's own loader refuses (a stray document, a wrong field) is no config here either."""
    refused = [name for name, error in loaded["upstream"].items() if error is not None]
    assert all(loaded["ours"][name] is not None for name in refused), {n: loaded["ours"][n] for n in refused}
