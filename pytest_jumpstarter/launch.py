"""Starting the processes of YAML exporters. Imports nothing heavy, so that the lab can start them first thing at
configure time: each exporter starts up while pytest imports the client (grpc and all) and collects, and a test
that needs it waits only for what is left (see ``Lab._load``)."""

from __future__ import annotations

import tempfile
from contextlib import suppress
from pathlib import Path

from jumpstarter.exporter.process import ExporterProcess, ExporterStartError


def is_yaml(spec: str) -> bool:
    """Whether an --exporter spec names an ExporterConfig file (else it is a running exporter's address)."""
    return spec.endswith((".yaml", ".yml")) or Path(spec).is_file()


class Launch:
    """``jumpstarter run SPEC`` serving on a unix socket in a private temporary folder, started now and awaited
    by ``wait()``; ``start_timeout``: seconds it has to serve."""

    def __init__(self, spec: str, passphrase: str | None, start_timeout: float) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="jumpstarter-pytest-")
        socket = Path(self._folder.name) / "exporter.sock"
        env = {"JUMPSTARTER_PASSPHRASE": passphrase} if passphrase else {}
        self.process = ExporterProcess(spec, "--listen", f"unix://{socket}", env=env)
        self.start_timeout = start_timeout

    def wait(self) -> ExporterProcess:
        """The process, once it serves; ExporterStartError, with its output, if it exits or hangs instead."""
        self.process.wait_ready(self.start_timeout)
        return self.process

    def stop(self) -> None:
        """Stop the exporter and remove its folder; again is harmless. One still starting is let serve first: a
        SIGTERM now would kill it before its drivers are all made, and none of them would be closed."""
        with suppress(ExporterStartError):
            self.wait()
        self.process.stop()
        self._folder.cleanup()
