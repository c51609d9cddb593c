"""The README's pytest examples, run as written: each ``<!-- file: PATH -->`` block becomes that file."""

from __future__ import annotations

import re

from samples import ROOT

EXAMPLE = re.compile(r"<!-- file: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)
CUSTOM_YAML = ROOT / "examples" / "jumpstarter-custom-driver" / "custom.yaml"


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
