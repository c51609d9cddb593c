"""The README's pytest examples, run as written: each ``<!-- file: PATH -->`` block becomes that file."""

from __future__ import annotations

import re
import shlex
import shutil

from samples import ROOT

from jumpstarter.exporter.process import ExporterProcess

EXAMPLE = re.compile(r"<!-- file: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)
CUSTOM_YAML = ROOT / "examples" / "jumpstarter-custom-driver" / "custom.yaml"
BOARD_YAML = ROOT / "examples" / "jumpstarter-driver-demo" / "board.yaml"


def readme_files() -> dict[str, str]:
    return {m["path"]: m["code"] for m in EXAMPLE.finditer((ROOT / "README.md").read_text())}


def test_readme_pytest_examples_pass_as_written(pytester):
    files = readme_files()
    assert {"hardware/test_custom.py", "mocked/conftest.py", "mocked/test_mocked.py"} <= set(files)
    for path, code in files.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    tests = sum(len(re.findall(r"^(?:async )?def test_", code, re.M)) for code in files.values())
    result = pytester.runpytest_subprocess("--exporter", str(CUSTOM_YAML), "--strict-markers")
    result.assert_outcomes(passed=tests)


def readme_commands(program: str) -> list[list[str]]:
    """The README's shell lines that run ``program``, as argument lists (comments dropped)."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith(f"{program} ")]


def test_readme_jumpstarter_run_commands_serve_as_written(tmp_path, tls_files):
    """Every `jumpstarter run board.yaml ...` line of the README serves, run as written beside the files it names."""
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
