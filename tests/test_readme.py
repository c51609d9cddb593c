"""The README's and docs/'s examples, run as written: each ``<!-- file: PATH -->`` block becomes that file."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from samples import ROOT

from jumpstarter.exporter.process import ExporterProcess

EXAMPLE = re.compile(r"<!-- file: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)
CUSTOM_YAML = ROOT / "examples" / "jumpstarter-custom-driver" / "custom.yaml"
BOARD_YAML = ROOT / "examples" / "jumpstarter-driver-demo" / "board.yaml"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The exporter each example folder's tests run against, as the docs' commands give it (`partial/`: the board).
EXPORTERS = {"partial": BOARD_YAML}


def readme_files() -> dict[str, str]:
    return {m["path"]: m["code"] for page in PAGES for m in EXAMPLE.finditer(page.read_text())}


@pytest.mark.parametrize("exporter", [CUSTOM_YAML, BOARD_YAML], ids=["custom", "board"])
def test_readme_pytest_examples_pass_as_written(pytester, exporter):
    files = readme_files()
    expected = {"hardware/test_first.py", "hardware/test_custom.py", "mocked/conftest.py", "mocked/test_mocked.py"}
    assert expected | {"partial/test_partial.py"} <= set(files)
    mine = {path: code for path, code in files.items() if EXPORTERS.get(path.split("/")[0], CUSTOM_YAML) == exporter}
    for path, code in mine.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    tests = sum(len(re.findall(r"^(?:async )?def test_", code, re.M)) for code in mine.values())
    assert tests
    folders = sorted({path.split("/")[0] for path in mine})
    result = pytester.runpytest_subprocess(f"--exporter={exporter}", "--strict-markers", *folders)
    result.assert_outcomes(passed=tests)


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_readme_pytest_examples_pass_the_projects_lint(check):
    """A reader who saves an example in this clone keeps `scripts/lint.sh` (which `scripts/test.sh` runs first)
    clean."""
    ruff = [sys.executable, "-m", "ruff", *check, "--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    findings = []
    for path, code in readme_files().items():
        result = subprocess.run(
            [*ruff, "--stdin-filename", str(ROOT / path), "-"], input=code, capture_output=True, text=True
        )
        if result.returncode:
            findings.append(f"{path}: {result.stdout}{result.stderr}")
    assert not findings


def readme_commands(program: str) -> list[list[str]]:
    """The README's and docs/'s shell lines that run ``program``, as argument lists (comments dropped)."""
    blocks = [block for page in PAGES for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S)]
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith(f"{program} ")]


def test_readme_jumpstarter_run_commands_serve_as_written(tmp_path, tls_files):
    """Every `jumpstarter run board.yaml ...` line of the docs serves, run as written beside the files it names."""
    commands = [c for c in readme_commands("jumpstarter") if c[1:3] == ["run", "board.yaml"]]
    assert len(commands) >= 4
    shutil.copy(BOARD_YAML, tmp_path / "board.yaml")
    shutil.copy(tls_files[0], tmp_path / "cert.pem")
    shutil.copy(tls_files[1], tmp_path / "key.pem")
    for command in commands:
        with ExporterProcess.start(tmp_path / "board.yaml", *command[3:], timeout=30, cwd=tmp_path) as running:
            assert running.address, command
            if "--listen" in command:
                assert running.address == command[command.index("--listen") + 1], command


def anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {anchor(m[1]) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def test_readme_and_docs_links_lead_somewhere():
    """Every relative link of the README and docs/ names a file that exists, and a heading of it where it says #."""
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (fragment and fragment not in anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken
