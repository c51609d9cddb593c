"""Upstream's ``ref:`` proxies: one driver under two paths of the tree, reported and reached as upstream's
exporter and client do (the driver reported again under the proxy's parent and name), made and closed once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jumpstarter.cli import export_tree
from jumpstarter.common.wire import NAME_LABEL
from jumpstarter.config import ExporterConfig
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from jumpstarter.driver import Driver, export
from jumpstarter.inprocess import serve
from jumpstarter.inspection import describe

HEADER = "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\n"
MADE: list[str] = []
CLOSED: list[str] = []


@dataclass(kw_only=True)
class Counter(Driver):
    """Counts what is made and closed; ``bump`` counts calls on this very instance."""

    label: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.count = 0
        MADE.append(self.label)

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    def bump(self) -> int:
        self.count += 1
        return self.count

    def close(self) -> None:
        CLOSED.append(self.label)
        super().close()


COUNTER = f"{__name__}.Counter"
# `serial` stands for storage.serial (declared after it, as upstream's flashers example does), `console` for a
# ref to a ref, and `dut.power` for a driver with a child of its own.
TREE = f"""\
export:
  serial:
    ref: storage.serial
  console:
    ref: serial
  storage:
    type: {COUNTER}
    config: {{label: storage}}
    children:
      serial:
        type: {COUNTER}
        config: {{label: serial}}
        children:
          pin: {{type: {COUNTER}, config: {{label: pin}}}}
  dut:
    type: {COUNTER}
    config: {{label: dut}}
    children:
      power: {{ref: storage}}
"""


def load() -> ExporterConfig:
    return ExporterConfig.parse(HEADER + TREE, "refs.yaml")


def test_a_ref_is_the_same_driver_under_both_paths_made_and_closed_once():
    MADE.clear()
    CLOSED.clear()
    config = load()
    config.check()
    assert config.export["console"].target is config.export["storage"].children["serial"]
    shown = export_tree(config)  # what `jumpstarter run` prints at start-up
    assert f"  console: the driver at storage.serial ({COUNTER})\n" in shown
    assert shown.endswith(f"\n    power: the driver at storage ({COUNTER})")
    root = config.instantiate()
    storage = root.children["storage"]
    assert root.children["serial"] is storage.children["serial"] is root.children["console"]
    assert root.children["dut"].children["power"] is storage
    assert sorted(MADE) == ["dut", "pin", "serial", "storage"]
    with serve(root):
        pass
    assert sorted(CLOSED) == ["dut", "pin", "serial", "storage"]


def test_calls_through_either_path_reach_one_instance_and_the_report_is_upstreams():
    root = load().instantiate()
    with serve(root) as client:
        serial: Any = client.children["serial"]
        console: Any = client.children["console"]
        inner: Any = client.children["storage"].children["serial"]
        assert [serial.call("bump"), inner.call("bump"), console.call("bump")] == [1, 2, 3]
        assert client.children["dut"].children["power"].children["serial"].call("bump") == 4
        counter: Any = root.children["storage"].children["serial"]
        assert counter.count == 4
        assert serial.uuid == inner.uuid == console.uuid
        assert serial.children["pin"].uuid == inner.children["pin"].uuid  # the target's children come along
        assert (serial.name, console.name, inner.name) == ("serial", "console", "storage.serial")

        # As upstream's exporter reports a Proxy: the target again, under the proxy's parent and name.
        reports = client.connection.report().reports
        by_name = [(r.labels.get(NAME_LABEL, ""), r.uuid) for r in reports]
        target = str(root.children["serial"].uuid)
        assert [name for name, uuid in by_name if uuid == target] == ["serial", "console", "serial", "serial"]
        proxy = next(r for r in reports if r.uuid == target and r.labels[NAME_LABEL] == "console")
        assert proxy.parent_uuid == str(root.uuid)

        shown = describe(client, "unix:///x", {})
        for path in ("serial", "console", "storage.serial", "dut.power.serial", "serial.pin"):
            assert f" {path}: jumpstarter.client.DriverClient" in shown, shown


def test_a_single_entry_resolves_refs_from_its_own_children():
    """Upstream's doctests build one driver from a YAML entry: its Proxy walks from that driver."""
    entry = ExporterConfigV1Alpha1DriverInstance.from_str(
        f"type: {COUNTER}\nchildren:\n  a: {{type: {COUNTER}, config: {{label: a}}}}\n  b: {{ref: a}}\n"
    )
    driver = entry.instantiate()
    assert driver.children["b"] is driver.children["a"]
