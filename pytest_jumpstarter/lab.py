"""The lab of a test session: its settings, its exporters, and the pool that leases them to tests.

One per pytest process, in ``config.stash[LAB]``. Without exporters it stays empty and imports
nothing heavy: the plugin is inert until configured.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_jumpstarter import launch, settings, xdist

if TYPE_CHECKING:
    from pytest_jumpstarter.exporters import Exporter
    from pytest_jumpstarter.pool import Pool


class Lab:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.values = settings.Values(config)
        self.workerid = xdist.worker_id(config)
        self.exporters: list[Exporter] = []
        self.pool: Pool | None = None
        self.scope: settings.Scope = "function"  # of the export fixtures: how long a lease is kept
        self._restore_sigterm: Callable[[], object] = lambda: None
        # Who holds a lease, as the exporters show it to other holders.
        self.holder = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}" + (
            f" {self.workerid}" if self.workerid else ""
        )
        # Record and replay (see recording.py, replay.py): replaying uses no exporter, even configured ones.
        self.record = self._folder("record")
        self.replay = self._folder("replay")
        if self.record and self.replay:
            raise pytest.UsageError("jumpstarter: --jumpstarter-record and --jumpstarter-replay: use one at a time")
        if (self.values["exporters"] or self.values["lab"]) and not self.replay:
            self._load()
        launch.stop_held()  # any the settings, read again now, don't name
        if self.record and not self.exporters:
            raise pytest.UsageError(
                f"jumpstarter: --jumpstarter-record {self.record} records the calls made to exporters, and none is "
                "configured: pass --exporter YAML|ADDRESS too"
            )

    def _folder(self, key: str) -> Path | None:
        value = self.values[key]
        return (self.config.invocation_params.dir / value).resolve() if value else None

    def _load(self) -> None:
        values = self.values
        tls = values.tls()
        self.scope = values.choice("lease_scope", settings.SCOPES)
        mode = values.choice("mode", settings.MODES)
        start_timeout = values.seconds("start_timeout")
        values.seconds("lease_timeout")  # checked now, used per test
        values.seconds("call_timeout")
        handoffs, passphrase = xdist.handoffs(self.config), values["passphrase"] or None
        if values["lab"]:  # a labgrid lab: each process finds its exporters at the coordinator (labgrid.py)
            from pytest_jumpstarter import labgrid

            self.exporters, self.pool = labgrid.load(values, passphrase, tls, self.workerid)
            if self.workerid is None:
                self._stop_on_sigterm()
            return
        launches = self._launch(passphrase, start_timeout) if handoffs is None and mode == "subprocess" else {}
        # Imported only now: grpc and the client take a while, and the exporters start up meanwhile.
        from pytest_jumpstarter import exporters
        from pytest_jumpstarter.pool import Pool

        try:
            self.exporters = exporters.load(
                values["exporters"], handoffs, passphrase, mode, tls, start_timeout, dict(launches)
            )
        except BaseException:
            for started in launches.values():
                started.stop()
            raise
        offset = int(self.workerid.removeprefix("gw")) if self.workerid else 0
        self.pool = Pool(self.exporters, offset)
        if self.workerid is None:
            self._stop_on_sigterm()

    def _launch(self, passphrase: str | None, start_timeout: float) -> dict[str, launch.Launch]:
        """Start the process of each YAML exporter now, to be awaited when a test first needs it; none when this
        run won't run tests (--collect-only, --help, --fixtures, --markers)."""
        options = self.config.option
        if any(getattr(options, name, False) for name in launch.NO_TESTS):
            return {}
        specs = [spec for spec in dict.fromkeys(self.values["exporters"]) if launch.is_yaml(spec)]
        return {
            spec: launch.take_held(spec, passphrase, start_timeout) or launch.Launch(spec, passphrase, start_timeout)
            for spec in specs
        }

    def _stop_on_sigterm(self) -> None:
        """SIGTERM (a cancelled CI job) ends the run as Ctrl-C does: tests' fixtures end, leases are given back,
        exporters stop and close their drivers. (Python's default would exit at once; the exporters would still
        stop, seeing their standard input end, but the tests' own teardown would not run.)"""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # someone else's handler: theirs to decide

        def on_sigterm(signum: int, frame: object) -> None:
            raise KeyboardInterrupt("jumpstarter: SIGTERM: the run stops as on Ctrl-C")  # pytest shows this line

        signal.signal(signal.SIGTERM, on_sigterm)
        self._restore_sigterm = lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def path(self, key: str) -> Path | None:
        """The file a setting names (None: not set): relative to the ini file when it came from there, else to
        the directory pytest was started in."""
        value = self.values[key]
        if not value:
            return None
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        if self.values.sources[key].startswith("ini") and self.config.inipath is not None:
            return self.config.inipath.parent / path
        return self.config.invocation_params.dir / path

    def provided(self) -> list[str]:
        """Every export name some exporter provides."""
        return sorted({name for e in self.exporters for name in e.exports})

    def close(self) -> None:
        self._restore_sigterm()
        for exporter in self.exporters:
            try:
                exporter.close()
            except Exception as exc:  # never hide the test results behind a teardown error
                print(f"jumpstarter: stopping {exporter.spec}: {exc}", file=sys.stderr)
        self.exporters = []
        close = getattr(self.pool, "close", None)  # a lab's pool holds a coordinator session
        if close is not None:
            close()


LAB = pytest.StashKey[Lab]()
