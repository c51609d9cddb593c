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
