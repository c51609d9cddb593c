"""ExporterConfig YAML: what loads, and the errors a user makes, each naming file and line."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from samples import SEED_YAML

from jumpstarter.config import ExporterConfig
from jumpstarter.errors import ConfigError

HEADER = "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\n"


def load_error(write, text: str) -> str:
    path = write("exporter.yaml", text)
    with pytest.raises(ConfigError) as info:
        ExporterConfig.load(path).instantiate()
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message.removeprefix(str(path))


def test_board_yaml_builds_the_tree():
    config = ExporterConfig.load(Path(__file__).parents[1] / "examples/jumpstarter-driver-demo/board.yaml")
    assert config.labels == {"board": "demo"} and config.name == "demo"
    root = config.instantiate()
    board: Any = root.children["board"]  # a jumpstarter_driver_demo.Board
    assert (board.name, board.baudrate) == ("demo-1", 9600)
    assert board.children["power"].state is False
    assert config.warnings == []


def test_seed_yaml_names_the_wrong_module_and_suggests_the_installed_one(write):
    """The seed's YAML says jumpstarter_driver_custom; the package is jumpstarter_custom_driver."""
    message = load_error(write, SEED_YAML)
    assert message.startswith(":9: export 'custom'"), message
    assert "no module named 'jumpstarter_driver_custom'" in message
    assert "did you mean 'jumpstarter_custom_driver.CustomDriver'" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", r"^:1: an ExporterConfig is a YAML mapping, but this document is a list"),
        ("", r"^:1: .*document is empty"),
        ("export: [unclosed\n", r"^:2:1: not valid YAML"),
        ("apiVersion: v1\nkind: ExporterConfig\nexport: {}\n", r"^:1: apiVersion is 'v1', expected"),
        ("apiVersion: jumpstarter.dev/v1alpha1\nkind: Exporter\nexport: {}\n", r"^:2: kind is 'Exporter'"),
        (HEADER + "exports:\n  a: {type: x.Y}\n", r"^:3: the top level: unknown key 'exports'; did you mean 'export'"),
        (HEADER + "export:\n  a:\n    typ: x.Y\n", r"^:5: export 'a': unknown key 'typ'; did you mean 'type'"),
        (HEADER + "export:\n  a:\n    config: {}\n", r"^:4: export 'a': missing 'type'"),
        (HEADER + "export:\n  a: {type: x.Y}\n  a: {type: x.Z}\n", r"^:5:.*duplicate key 'a' \(first at line 4\)"),
        (HEADER + "export:\n  a:\n    ref: b\n", r"^:5: export 'a': ref 'b': no driver 'b' at the top of 'export'"),
        (HEADER + "export:\n  a:\n    ref: a\n", r"^:5: export 'a': ref 'a' refers to itself"),
        (
            HEADER + "export:\n  a: {ref: b}\n  b: {ref: a}\n",
            r"^:4: export 'a': ref 'b' makes a cycle of refs \(a -> b -> a\)",
        ),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Board\n    config: {name: x}\n"
            "    children:\n      p: {ref: a}\n",
            r"^:8: export 'a.p': ref 'a' is a cycle: 'a' holds this ref itself",
        ),
        (
            HEADER + "export:\n  a:\n    children:\n      p: {ref: b}\n  b:\n    children:\n      q: {ref: a}\n",
            r"^:6: export 'a.p': ref 'b' is a cycle: 'b' holds this ref itself \(through 'a'\)",
        ),
        (
            HEADER + "export:\n  a: {type: jumpstarter_driver_demo.Power}\n  b:\n    ref: a.x\n",
            r"^:6: export 'b': ref 'a.x': no driver 'x' below 'a' \(there: none\)",
        ),
        (
            HEADER + "export:\n  a: {type: jumpstarter_driver_demo.Power}\n  b:\n    ref: a\n    type: x.Y\n",
            r"^:7: export 'b': a 'ref' entry stands for the driver it names and takes no 'type' of its own",
        ),
        (HEADER + "export:\n  a: {ref: 'a..b'}\n", r"^:4: export 'a': ref 'a..b' must be a dotted path"),
        (HEADER, r"missing 'export'"),
        (HEADER + "export:\n  my.board: {type: x.Y}\n", r"^:4: export 'my.board': an export name is a non-empty"),
        (HEADER + "export:\n  1: {type: x.Y}\n", r"^:4: export '1': an export name is a non-empty string"),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Bord\n",
            r"^:5: export 'a': .*has no 'Bord'; did you mean 'jumpstarter_driver_demo.Board'",
        ),
        (
            HEADER + "export:\n  a:\n    type: json.JSONDecoder\n",
            r"^:5: export 'a': type 'json.JSONDecoder' is not a Driver subclass",
        ),
        (HEADER + "export:\n  a:\n    type: Board\n", r"^:5: export 'a': type 'Board' must be a full import path"),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Board\n    config:\n      baud: 9600\n",
            r"^:5: export 'a': unknown config parameter 'baud' for Board \(it takes: .*\); did you mean 'baudrate'",
        ),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Board\n"
            "    children:\n      p:\n        config: {}\n",
            r"^:7: export 'a.p': missing 'type'",
        ),
        (
            HEADER + "hooks:\n  beforeLease: {script: j power on, timeout: 0}\nexport: {}\n",
            r"^:4: hooks.beforeLease.timeout must be a number of seconds above 0 and at most 86400, not 0",
        ),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Power\n    methods_description: {of: x}\n",
            r"^:5: export 'a': methods_description names 'of', which Power does not export \(it exports: off, on",
        ),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Power\n    methods_description: [on]\n",
            r"^:6: export 'a' methods_description must be a mapping of strings",
        ),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Power\n    methods_description: {on: x}\n",
            r"^:6: export 'a' methods_description: key True is a boolean in YAML; quote it \('on', 'off'",
        ),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Board\n    config:\n"
            "      name: x\n      baudrate: fast\n",
            r"^:8: export 'a': config 'baudrate' of Board must be int, got str 'fast'",
        ),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Board\n    config:\n      name: [x]\n",
            r"^:7: export 'a': config 'name' of Board must be str, got list",
        ),
        (
            HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Power\n    config:\n      on: true\n",
            r"^:7: export 'a' config: key True is a boolean in YAML; quote it \('on', 'off'",
        ),
    ],
)
def test_config_errors_name_the_line_and_the_problem(write, text, expected):
    assert re.search(expected, load_error(write, text))


def test_config_values_are_converted_as_call_arguments_are(write):
    path = write(
        "exporter.yaml",
        HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Board\n    config: {baudrate: 9600.0}\n",
    )
    board: Any = ExporterConfig.load(path).instantiate().children["a"]
    assert board.baudrate == 9600 and type(board.baudrate) is int


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such exporter config file"):
        ExporterConfig.load(tmp_path / "nope.yaml")


def test_driver_constructor_failure_names_the_export(write):
    write(
        "failing_driver.py",
        """
        from dataclasses import dataclass
        from jumpstarter.driver import Driver

        @dataclass(kw_only=True)
        class Failing(Driver):
            port: str

            @classmethod
            def client(cls):
                return "jumpstarter.client.DriverClient"

            def __post_init__(self):
                super().__post_init__()
                raise OSError(f"can't open {self.port}")
        """,
    )
    import sys

    sys.path.insert(0, str(write("x", "").parent))
    try:
        message = load_error(write, HEADER + "export:\n  serial:\n    type: failing_driver.Failing\n")
        assert re.search(r"^:5: export 'serial': missing config parameter 'port' for Failing", message)
        message = load_error(
            write, HEADER + "export:\n  serial:\n    type: failing_driver.Failing\n    config: {port: /dev/ttyX}\n"
        )
        assert "export 'serial': Failing(...) failed: OSError: can't open /dev/ttyX" in message
    finally:
        sys.path.pop(0)
        sys.modules.pop("failing_driver", None)


def test_earlier_drivers_are_closed_when_a_later_entry_fails(write, monkeypatch):
    from jumpstarter_driver_demo import Board

    closed = []
    monkeypatch.setattr(Board, "close", lambda self: closed.append(self.name))
    load_error(
        write,
        HEADER + "export:\n  a:\n    type: jumpstarter_driver_demo.Board\n    config: {name: first}\n"
        "  b:\n    type: nowhere.Driver\n",
    )
    assert closed == ["first"]


def test_children_only_entry_becomes_a_composite_and_upstream_composite_is_understood(write):
    path = write(
        "exporter.yaml",
        HEADER
        + "export:\n  rack:\n    children:\n      one: {type: jumpstarter_driver_demo.Power}\n"
        + "  group:\n    type: jumpstarter_driver_composite.driver.Composite\n"
        + "    children:\n      two: {type: jumpstarter_driver_demo.Power}\n",
    )
    root = ExporterConfig.load(path).instantiate()
    one: Any = root.children["rack"].children["one"]  # a jumpstarter_driver_demo.Power
    assert one.state is False
    assert "two" in root.children["group"].children


def test_endpoint_and_token_are_reported_as_ignored(write):
    path = write("exporter.yaml", HEADER + "endpoint: grpc.example.com:443\ntoken: abc\nexport: {}\n")
    config = ExporterConfig.load(path)
    assert config.endpoint == "grpc.example.com:443"
    assert any("ignored" in w and "controller" in w for w in config.warnings)


def test_upstream_keys_load(write):
    """A YAML written for upstream: method help texts are served, its restart-loop settings ignored."""
    path = write(
        "exporter.yaml",
        HEADER + "failureDetection: {maxRapidFailures: 3}\n"
        "export:\n  power:\n    type: jumpstarter_driver_demo.Power\n"
        "    description: the bench PSU\n    methods_description: {'on': Switch the DUT on}\n",
    )
    config = ExporterConfig.load(path)
    assert any("failureDetection" in w and "ignored" in w for w in config.warnings)
    power = config.instantiate().children["power"]
    assert (power.description, power.methods_description) == ("the bench PSU", {"on": "Switch the DUT on"})


def test_a_boolean_key_inside_a_config_value_is_named_with_its_line_and_quoting(write, monkeypatch):
    """YAML 1.1 reads a shell driver's ``on:`` method as True: say which key, where, and how to quote it."""
    write(
        "shell_like_driver.py",
        """
        from dataclasses import dataclass
        from jumpstarter.driver import Driver

        @dataclass(kw_only=True)
        class Shell(Driver):
            methods: dict[str, str | dict[str, str | int]]

            @classmethod
            def client(cls):
                return "jumpstarter.client.DriverClient"
        """,
    )
    monkeypatch.syspath_prepend(str(write("x", "").parent))
    monkeypatch.delitem(sys.modules, "shell_like_driver", raising=False)
    text = HEADER + "export:\n  shell:\n    type: shell_like_driver.Shell\n    config:\n      methods:\n"
    message = load_error(write, text + "        greet: echo hi\n        yes: echo yes\n")
    assert message.startswith(":9: export 'shell': config 'methods' of Shell: key True is a boolean in YAML"), message
    assert "YAML 1.1 reads on/off/yes/no as true/false); quote it: 'yes':" in message
    message = load_error(write, text + "        off:\n          command: echo off\n")
    assert message.startswith(":8: export 'shell': config 'methods' of Shell: key False"), message
    assert "quote it: 'off':" in message
