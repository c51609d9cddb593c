"""The lab of a test session: its settings, its exporters, and the pool that leases them to tests.

One per pytest process, in ``config.stash[LAB]``. Without exporters it stays empty and imports
nothing heavy: the plugin is inert until configured.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_jumpstarter import settings, xdist

if TYPE_CHECKING:
    from jumpstarter.exporter.process import Standby
    from pytest_jumpstarter.exporters import Exporter
    from pytest_jumpstarter.launch import Launch
    from pytest_jumpstarter.pool import Pool

# Options of runs that run no test: they start no exporter.
NO_TESTS = ("collectonly", "help", "showfixtures", "show_fixtures_per_test", "markers", "version")


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
        if self.values["exporters"] and not self.replay:
            self._load()
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
        launches = self._launch(passphrase, start_timeout) if handoffs is None and mode == "subprocess" else {}
        # Imported only now: grpc and the client take a while, and the exporters start up meanwhile.
        from pytest_jumpstarter import exporters
        from pytest_jumpstarter.pool import Pool

        try:
            self.exporters = exporters.load(
                values["exporters"], handoffs, passphrase, mode, tls, start_timeout, dict(launches)
            )
        except BaseException:
            for launch in launches.values():
                launch.stop()
            raise
        offset = int(self.workerid.removeprefix("gw")) if self.workerid else 0
        self.pool = Pool(self.exporters, offset)
        if self.workerid is None:
            self._stop_on_sigterm()

    def _launch(self, passphrase: str | None, start_timeout: float) -> dict[str, Launch]:
        """Start the process of each YAML exporter now, to be awaited when a test first needs it; none when this
        run won't run tests (--collect-only, --help, --fixtures, --markers)."""
        if any(getattr(self.config.option, name, False) for name in NO_TESTS):
            return {}
        from pytest_jumpstarter.launch import Launch, is_yaml

        standbys = self.config.stash.get(STANDBYS, [])
        specs = [spec for spec in dict.fromkeys(self.values["exporters"]) if is_yaml(spec)]
        return {spec: Launch(spec, passphrase, start_timeout, standbys.pop() if standbys else None) for spec in specs}

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


LAB = pytest.StashKey[Lab]()
STANDBYS = pytest.StashKey[list["Standby"]]()


def start_standbys(config: pytest.Config, parser: pytest.Parser) -> None:
    """Start a standby Python (``jumpstarter.exporter.standby``) for each YAML exporter this run will likely start,
    now, as the plugin is registered: pytest goes on to load the other plugins and the conftests (anyio's plugin
    alone takes 50 ms, 180 ms when pytest rewrites its asserts anew), and meanwhile the standbys import what an
    exporter needs, most of its start-up. Only a guess from the options as they stand now, so nothing of an
    exporter happens in them yet: configure (``Lab._launch``) runs each exporter in one, if it fits, and the
    others are discarded (``discard_standbys``)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker uses the exporters its controller started
        return
    try:
        count = _yaml_exporters(config, parser)
    except (AttributeError, ValueError, pytest.UsageError):
        return  # pytest hasn't read its ini file yet (a plugin object handed to pytest.main), or bad options
    if not count:
        return
    from jumpstarter.exporter.process import Standby

    standbys = config.stash[STANDBYS] = []
    config.add_cleanup(lambda: discard_standbys(config))
    try:
        for _ in range(count):
            standbys.append(Standby())
    except OSError:
        pass  # no process to be had now: configure starts the others, or says why it can't


def _yaml_exporters(config: pytest.Config, parser: pytest.Parser) -> int:
    """How many YAML exporters the options as they stand say this run starts (see ``Lab._load``)."""
    from pytest_jumpstarter.launch import is_yaml

    options = argparse.Namespace()
    args = [
        *config.getini("addopts"),
        *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
        *config.invocation_params.args,
    ]
    if any(str(arg).startswith("--exporter") for arg in args):  # else spare parsing them
        options = parser.parse_known_args(args)
    if any(getattr(options, name, False) for name in NO_TESTS):
        return 0
    exporters, _ = settings.resolve(config, settings.EXPORTERS, options)
    mode, _ = settings.resolve(config, settings.MODE, options)
    replay, _ = settings.resolve(config, settings.REPLAY, options)
    if not isinstance(exporters, tuple) or mode != "subprocess" or replay:
        return 0
    return len([spec for spec in dict.fromkeys(exporters) if is_yaml(spec)])


def discard_standbys(config: pytest.Config) -> None:
    """End the standbys no exporter was run in."""
    for standby in config.stash.get(STANDBYS, []):
        standby.discard()
    config.stash[STANDBYS] = []
