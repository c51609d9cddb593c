"""Proxies and hyphenated export names under the pytest plugin: a served YAML whose `dut-power` is a `ref:` to
board.power. Its fixture is `dut_power`; both paths reach one driver; a mock replaces the path it names; the
calls through the proxy are recorded under its path and replayed."""

from __future__ import annotations

import yaml

LAB = """\
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
export:
  board:
    type: jumpstarter_driver_demo.Board
    config: {name: demo-1, baudrate: 9600}
    children:
      power: {type: jumpstarter_driver_demo.Power}
  dut-power:
    ref: board.power
"""

TESTS = """
import pytest
from jumpstarter_driver_demo import Power

switch = Power()


def test_both_paths_are_one_switch(board, dut_power):
    dut_power.on()
    assert board.power.read() is True
    board.power.off()
    assert dut_power.read() is False
    assert dut_power.uuid == board.power.uuid and dut_power.name == "dut-power"


def test_the_root_reaches_it_by_its_name(exporter):
    assert sorted(exporter.children) == ["board", "dut-power"]
    assert exporter.children["dut-power"].uuid == exporter.board.power.uuid


@pytest.mark.jumpstarter_mock(**{"board.power": switch})
def test_a_mock_replaces_the_path_it_names(board, dut_power):
    board.power.on()
    assert switch.history == ["on"]
    dut_power.off()  # the exporter's driver, as upstream's client has a client for each path
    assert switch.history == ["on"] and dut_power.read() is False


@pytest.mark.jumpstarter_mock(dut_power=Power)
def test_the_proxy_mocked_by_its_fixture_name(board, dut_power):
    dut_power.on()
    assert dut_power.read() is True
    board.power.off()
    assert dut_power.read() is True
"""


def test_proxy_fixture_mocks_record_and_replay(pytester):
    pytester.makefile(".yaml", lab=LAB)
    pytester.makepyfile(test_lab=TESTS)
    result = pytester.runpytest_subprocess("--exporter", "lab.yaml", "-p", "no:randomly", "--jumpstarter-record", "rec")
    result.assert_outcomes(passed=4)
    tests = yaml.safe_load((pytester.path / "rec" / "test_lab.yaml").read_text())["tests"]
    first = tests["test_both_paths_are_one_switch"]
    assert first["fixtures"] == {"board": "board", "dut_power": "dut-power"}
    assert [step["call"] for step in first["calls"]] == [
        "dut-power.on",
        "board.power.read",
        "board.power.off",
        "dut-power.read",
    ]
    # One driver under two paths: replay gives both one uuid, as the exporter did.
    assert tests["test_the_root_reaches_it_by_its_name"]["drivers"]["dut-power"]["same"] == "board.power"
    replayed = pytester.runpytest_subprocess("-p", "no:randomly", "--jumpstarter-replay", "rec")
    replayed.assert_outcomes(passed=4)


def test_two_exports_with_one_fixture_name_are_an_error_naming_both(pytester):
    pytester.makefile(".yaml", lab=LAB + "  dut_power: {ref: board.power}\n")
    pytester.makepyfile(test_lab="def test_x(dut_power):\n    pass\n")
    result = pytester.runpytest_subprocess("--exporter", "lab.yaml")
    assert result.ret != 0
    result.stderr.fnmatch_lines(
        ["*lab.yaml*exports 'dut-power' and 'dut_power' would both be the pytest fixture 'dut_power'; rename one*"]
    )
