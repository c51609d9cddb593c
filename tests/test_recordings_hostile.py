"""Recordings committed to git: damaged or hostile files are refused clearly and cost only their module; files
are read and written only inside the recordings folder, never through a link; one bad old file doesn't stop
recording the others."""

from __future__ import annotations

import os
import textwrap

import pytest
import yaml
from samples import EXAMPLES

from pytest_jumpstarter import tapes

BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"

GOOD = """\
version: 1
tests:
  test_x:
    fixtures: {board: board}
    drivers: {board: jumpstarter_driver_demo.client.BoardClient}
    calls:
    - {call: board.add, args: [1, 1], result: 2}
"""

TEST_X = "def test_x(board):\n    assert board.add(1, 1) == 2\n"


def recording(test: str) -> str:
    """A file whose test ``test_x`` is ``test`` (YAML, indented under its key)."""
    return "version: 1\ntests:\n  test_x:\n" + textwrap.indent(textwrap.dedent(test).strip("\n"), "    ") + "\n"


STEP = "fixtures: {board: board}\ndrivers: {board: jumpstarter_driver_demo.client.BoardClient}\ncalls:\n"

DAMAGED = {
    "a test that is text": ("version: 1\ntests:\n  test_x: just text\n", "test 'test_x' must be a mapping, not str"),
    "a test that is a list": ("version: 1\ntests:\n  test_x: [1, 2]\n", "test 'test_x' must be a mapping, not list"),
    "fixtures a list": (
        recording("fixtures: [board]\ndrivers: {}\ncalls: []"),
        "test 'test_x': 'fixtures' must be a mapping, not list",
    ),
    "a fixture path an int": (
        recording("fixtures: {board: 3}\ndrivers: {}\ncalls: []"),
        "test 'test_x': fixture 'board''s driver path must be text, not int 3",
    ),
    "drivers a list": (
        recording("fixtures: {board: board}\ndrivers: [board]\ncalls: []"),
        "test 'test_x': 'drivers' must be a mapping, not list",
    ),
    "drivers missing": (recording("fixtures: {board: board}\ncalls: []"), "test 'test_x': no 'drivers'"),
    "calls text": (
        recording("fixtures: {board: board}\ndrivers: {}\ncalls: board.add"),
        "test 'test_x': 'calls' must be a list of steps, not str",
    ),
    "calls a list of ints": (recording(STEP + "- 1\n- 2"), "test 'test_x', step 1 must be a mapping, not int 1"),
    "an error that is text": (
        recording(STEP + "- {call: board.add, args: [1, 1], error: boom}"),
        "test 'test_x', step 1: 'error' must be a mapping, not str 'boom'",
    ),
    "an int where bytes go": (
        recording(STEP + "- stream: board.console\n  traffic: [{receive: 3000000000}]"),
        "test 'test_x', step 1, traffic item 1: 'receive' must be text or !!binary bytes, not int 3000000000",
    ),
    "a step of no kind": (recording(STEP + "- {args: [1]}"), "test 'test_x', step 1: a step has one of call,"),
    "merge-conflict markers": (
        GOOD.replace("    calls:", "<<<<<<< HEAD\n    calls:") + "=======\n>>>>>>> other\n",
        "not a jumpstarter recording",
    ),
    "a newer version": (
        GOOD.replace("version: 1", "version: 7"),
        "recording version 7, written by a newer jumpstarter",
    ),
    "a Python tag": (GOOD.replace("result: 2", "result: !!python/object/apply:os.system [echo hi]"), "could not"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_recording_is_refused_naming_the_file_and_place(tmp_path, case):
    text, message = DAMAGED[case]
    path = tmp_path / "test_board.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        tapes.load(path, tmp_path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 10):
        levels.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    bomb = "bomb:\n" + "".join(f"  {line}\n" for line in levels)
    path = tmp_path / "test_board.yaml"
    path.write_text(bomb + recording(STEP + "- call: board.add\n  args: [*a9]"))
    with pytest.raises(ValueError, match="more than 1000000 values once its aliases are expanded"):
        tapes.load(path, tmp_path)


def test_only_regular_files_inside_the_folder_are_read(tmp_path):
    folder, outside = tmp_path / "rec", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "secret.yaml").write_text(GOOD)
    os.mkfifo(folder / "fifo.yaml")
    (folder / "zero.yaml").symlink_to("/dev/zero")
    (folder / "link.yaml").symlink_to(outside / "secret.yaml")
    (folder / "sub").symlink_to(outside, target_is_directory=True)
    with open(folder / "big.yaml", "wb") as big:
        big.truncate(tapes.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    for name, problem in [
        ("fifo.yaml", "is not a regular file"),
        ("zero.yaml", "is a symlink"),
        ("link.yaml", "is a symlink"),
        ("sub/secret.yaml", "sub is a symlink or not a folder"),
        ("big.yaml", f"over the limit of {tapes.MAX_FILE_BYTES}"),
    ]:
        with pytest.raises(OSError, match=problem):
            tapes.load(folder / name, folder)


def test_saving_never_writes_through_a_link(tmp_path):
    folder, outside = tmp_path / "rec", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "hw").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError, match="hw is a symlink or not a folder"):
        tapes.save(folder / "hw" / "test_boot.yaml", {}, folder)
    (outside / "target").write_text("mine")
    (folder / "test_boot.yaml").symlink_to(outside / "target")
    tapes.save(folder / "test_boot.yaml", {}, folder)
    assert (outside / "target").read_text() == "mine" and list(outside.iterdir()) == [outside / "target"]
    assert not (folder / "test_boot.yaml").is_symlink() and tapes.load(folder / "test_boot.yaml", folder) == {}
    assert sorted(p.name for p in folder.iterdir()) == ["hw", "test_boot.yaml"]  # no temporary file left


def test_a_saved_recording_has_no_aliases(tmp_path):
    shared = [1, 2]
    tapes.save(
        tmp_path / "t.yaml",
        {
            "test_x": {
                "fixtures": {},
                "drivers": {},
                "calls": [{"call": "a", "args": shared}, {"call": "b", "args": shared}],
            }
        },
    )
    assert "&" not in (tmp_path / "t.yaml").read_text() and "*" not in (tmp_path / "t.yaml").read_text()


def test_a_bad_recording_fails_only_its_modules_tests(pytester):
    """Replay reads each module's file as it collects it: bad ones fail their own tests, clearly; the run goes
    on (no INTERNALERROR, no hang on a FIFO), and a bad unrelated file is never read."""
    rec = pytester.path / "rec"
    rec.mkdir()
    pytester.makepyfile(
        test_good=TEST_X + "\ndef test_no_hardware():\n    pass\n",
        test_text=TEST_X,
        test_fifo=TEST_X,
        test_zero=TEST_X,
        test_conflict=TEST_X,
    )
    (rec / "test_good.yaml").write_text(GOOD)
    (rec / "test_text.yaml").write_text(DAMAGED["a test that is text"][0])
    os.mkfifo(rec / "test_fifo.yaml")
    (rec / "test_zero.yaml").symlink_to("/dev/zero")
    (rec / "test_conflict.yaml").write_text(DAMAGED["merge-conflict markers"][0])
    os.mkfifo(rec / "unrelated.yaml")
    (rec / "unrelated_bad.yaml").write_text("- a list\n")
    result = pytester.runpytest_subprocess("--jumpstarter-replay", "rec", "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=2, errors=4)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines_random(
        [
            "*jumpstarter: can't replay this module's tests: */rec/test_text.yaml: not a valid recording: "
            "test 'test_x' must be a mapping, not str 'just text'",
            "*jumpstarter: can't replay this module's tests: */rec/test_fifo.yaml is not a regular file: refused",
            "*jumpstarter: can't replay this module's tests: */rec/test_zero.yaml is a symlink: refused*",
            "*jumpstarter: can't replay this module's tests: */rec/test_conflict.yaml: not a jumpstarter recording: *",
        ]
    )


def test_recording_past_a_bad_old_file_writes_the_other_modules(pytester):
    rec = pytester.path / "rec"
    rec.mkdir()
    pytester.makepyfile(test_one=TEST_X, test_two=TEST_X)
    conflicted = DAMAGED["merge-conflict markers"][0]
    (rec / "test_one.yaml").write_text(conflicted)
    result = pytester.runpytest_subprocess(
        "--exporter", str(BOARD_YAML), "--jumpstarter-record", "rec", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "jumpstarter: recorded 1 tests' driver calls in 1 files under *rec",
            "jumpstarter: 1 tests' recordings not written: */rec/test_one.yaml: not a jumpstarter recording: *",
        ]
    )
    assert (rec / "test_one.yaml").read_text() == conflicted  # kept for the person resolving the conflict
    assert yaml.safe_load((rec / "test_two.yaml").read_text())["tests"]["test_x"]["calls"] == [
        {"call": "board.add", "args": [1, 1], "result": 2}
    ]


def test_recording_writes_only_inside_its_folder(pytester):
    rec, outside = pytester.path / "rec", pytester.path / "outside"
    rec.mkdir()
    outside.mkdir()
    (pytester.path / "hw").mkdir()
    (pytester.path / "hw" / "test_boot.py").write_text(TEST_X)
    (pytester.path / "test_top.py").write_text(TEST_X)
    (rec / "hw").symlink_to(outside, target_is_directory=True)
    (outside / "elsewhere").write_text("mine")
    (rec / "test_top.yaml").symlink_to(outside / "elsewhere")
    result = pytester.runpytest_subprocess(
        "--exporter", str(BOARD_YAML), "--jumpstarter-record", "rec", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*not written: */rec/hw/test_boot.yaml: */rec/hw is a symlink or not a folder: refused*",
            "*not written: */rec/test_top.yaml is a symlink: refused*",
        ]
    )
    assert sorted(p.name for p in outside.iterdir()) == ["elsewhere"]
    assert (outside / "elsewhere").read_text() == "mine"
