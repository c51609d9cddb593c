"""Paths and texts the tests share (the fixtures are in the root conftest.py)."""

from __future__ import annotations

from pathlib import Path

from jumpstarter.client.connection import Connection
from jumpstarter.client.lease import Lease, try_lease

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# The YAML of ../shared/seed/custom-driver.md, verbatim: its type names a module that doesn't exist.
SEED_YAML = """\
# /etc/jumpstarter/exporters/custom.yaml
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
endpoint: ""
token: ""
export:
    custom:
        # full import path of the driver class
        type: jumpstarter_driver_custom.CustomDriver
"""


# A driver whose crash() ends the exporter process mid-call, as a segfaulting driver would.
CRASHY_DRIVER = """
    import os
    from jumpstarter.driver import Driver, export

    class Crashy(Driver):
        @classmethod
        def client(cls):
            return "jumpstarter.client.DriverClient"

        @export
        def ping(self):
            return "pong"

        @export
        def crash(self):
            os._exit(3)
"""


def exporter_yaml(
    path: Path, exports: dict[str, str], *, name: str = "", labels: dict[str, str] | None = None, config: str = ""
) -> Path:
    """Write an ExporterConfig of ``exports`` (export name -> driver type, each with the YAML ``config``)."""
    meta = f"  name: {name}\n" if name else ""
    meta += "  labels:\n" + "".join(f"    {k}: {v}\n" for k, v in labels.items()) if labels else ""
    body = "".join(
        f"  {export}:\n    type: {kind}\n" + (f"    config:\n      {config}\n" if config else "")
        for export, kind in exports.items()
    )
    path.write_text(
        "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\n"
        + (f"metadata:\n{meta}" if meta else "")
        + f"export:\n{body}"
    )
    return path


def leased(connection: Connection, holder: str) -> Lease:
    """try_lease() where the test expects the exporter free: a Busy one fails the test, saying who holds it."""
    taken = try_lease(connection, holder)
    assert isinstance(taken, Lease), f"expected a free exporter: {taken}"
    return taken


def rss(pid: int) -> int:
    """Process ``pid``'s resident memory (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


# A board for health checks and retries, its faults set in its YAML's config: ``sick`` (its power rail reads low and
# work() fails, every time), ``flaky`` (a counter file: work() fails on its first call only), ``crash`` (work() ends
# the exporter process, as a board that drops off the network would). ``hang(s)`` blocks s seconds.
UNIT_DRIVER = """
    import os
    import time
    from dataclasses import dataclass

    from jumpstarter.driver import Driver, export

    @dataclass(kw_only=True)
    class Unit(Driver):
        name: str
        sick: bool = False
        flaky: str = ""
        crash: bool = False

        @classmethod
        def client(cls):
            return "jumpstarter.client.DriverClient"

        @export
        def power_ok(self) -> bool:
            return not self.sick

        @export
        def work(self) -> str:
            if self.crash:
                os._exit(3)
            if self.sick:
                raise RuntimeError(f"{self.name}: no answer on the serial console")
            if self.flaky:
                count = int(open(self.flaky).read()) if os.path.exists(self.flaky) else 0
                with open(self.flaky, "w") as counter:
                    counter.write(str(count + 1))
                if count == 0:
                    raise RuntimeError(f"{self.name}: a glitch")
            return self.name

        @export
        def hang(self, seconds: float) -> None:
            time.sleep(seconds)
"""


def unit_yaml(folder: Path, name: str, labels: dict[str, str] | None = None, **faults: object) -> Path:
    """An ExporterConfig of one ``Unit`` (UNIT_DRIVER, imported as ``unit``) under export ``unit``, named ``name``."""
    config = "\n      ".join([f"name: {name}", *(f"{key}: {value}" for key, value in faults.items())])
    return exporter_yaml(folder / f"{name}.yaml", {"unit": "unit.Unit"}, name=name, labels=labels, config=config)
