"""The exporters of a test session: YAML ones the plugin starts, running ones reached by address."""

from __future__ import annotations

import subprocess
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jumpstarter.client import DriverClient, connect
from jumpstarter.client.connection import CONNECT_TIMEOUT, TLS, Connection, accepts_connections
from jumpstarter.client.lease import Busy, HookFailed, Lease, stop_waiting, try_lease
from jumpstarter.common.wire import NAME_LABEL, when
from jumpstarter.config import ExporterConfig
from jumpstarter.errors import ClientClassError, ConfigError, ConnectError, JumpstarterError
from jumpstarter.exporter.process import ExporterProcess, ExporterStartError
from jumpstarter.exporter.stopnote import read_stop_note, stopped_by
from pytest_jumpstarter.launch import STOP_TIMEOUT, Launch, is_yaml
from pytest_jumpstarter.names import fixture_names

DYING = 1.0  # seconds an exporter whose connection broke is given to end, so that we can say how it ended
# An exporter whose connection broke but whose address still takes connections (frozen, or starved of CPU on a
# loaded runner: a keepalive ping went unanswered) is tried again every RETRY s, and is gone only if it hasn't
# answered for GRACE s. One that is known dead (its process ended, or nothing listens there) is gone at once.
GRACE = 60.0
RETRY = 1.0


@dataclass(frozen=True)
class Unanswered:
    """The exporter's connection broke at ``since`` (seconds since the epoch) and it hasn't answered again yet:
    claims wait for it, as for a busy one, until it answers or its grace is over."""

    since: float
    why: str

    def __str__(self) -> str:
        return f"has not answered since {when(self.since)}; trying again ({self.why})"


class Exporter:
    """One exporter of the session; ``client()`` connects (and starts it) on first use."""

    def __init__(self, spec: str, passphrase: str | None, tls: TLS = False) -> None:
        self.spec, self.passphrase, self.tls = spec, passphrase, tls
        self.name = spec
        self.exports: list[str] = []  # fixture names (names.py); export_names: fixture name -> export name
        self.export_names: dict[str, str] = {}
        self.descendants: list[str] = []  # dotted paths of the drivers below the exports ("dut.power")
        self.labels: dict[str, str] = {}
        self.gone: str | None = None  # why it can't be reached any more
        self.stop_note = ""  # where an exporter the plugin started says why it stopped by itself (stopnote.py)
        self.refused = False  # gone only for us: it runs, but names a client class this side won't load
        self.unanswered: Unanswered | None = None  # its connection broke, and it hasn't answered since
        self._broke = self._tried = 0.0  # (monotonic) when it broke, and when it was last tried again
        self._root: DriverClient | None = None
        self._stack = ExitStack()
        self.observers: list[Any] = []
        self.keep = True  # keep the lease between a worker's tests (a lab's places go back to its queue instead)

    def describe(self) -> str:
        return self.spec

    def client(self) -> DriverClient:
        if self._root is None:
            self._root = self._stack.enter_context(self._open())
            self._root.connection.observers = self.observers  # shared: observers added later see every call
        return self._root

    @property
    def address(self) -> str:
        return self.client().connection.address

    def _open(self):
        return connect(self.spec, passphrase=self.passphrase, tls=self.tls)

    def name_exports(self, exports: list[str]) -> None:
        """Set ``exports`` (their fixture names) and ``export_names`` from the exporter's export names."""
        try:
            self.export_names = fixture_names(exports, f"exporter {self.spec}")
        except ConfigError:
            self.close()  # what it started or opened
            raise
        self.exports = list(self.export_names)

    def provides(self, export: str | None) -> bool:
        return export is None or export in self.exports

    def matches(self, labels: dict[str, str]) -> bool:
        return all(self.labels.get(key) == value for key, value in labels.items())

    def try_lease(self, holder: str) -> Lease | Busy | Unanswered:
        """Lease it if free. One that can't start, or is known dead, is gone for the rest of the session
        (ConnectError): tests that need it fail fast instead of each trying again. One whose connection broke
        while it still takes connections is ``Unanswered`` until it answers again, or is gone after GRACE s."""
        if self.failure():
            raise ConnectError(self.failure())
        try:
            connection = self.client().connection
        except (ExporterStartError, JumpstarterError, OSError) as exc:
            self.gone, self.refused = f"jumpstarter: {exc}", isinstance(exc, ClientClassError)
            raise ConnectError(self.failure() or self.gone) from None
        if self.unanswered is not None:
            return self._try_again(connection, holder)
        try:
            return try_lease(connection, holder, keep=self.keep)  # a worker's next test needn't wait for the exporter
        except HookFailed as exc:
            if exc.run.on_failure == "exit":  # it stops: its other tests fail naming the hook
                self.gone = stopped_by(self.name, exc.run.hook, exc.run.failure)
            raise
        except ConnectError as exc:
            self._check_alive(connection, exc, dying=DYING)
            self.unanswered, self._broke, self._tried = Unanswered(time.time(), str(exc)), time.monotonic(), 0.0
            return self._try_again(connection, holder)

    def _try_again(self, connection: Connection, holder: str) -> Lease | Busy | Unanswered:
        """An exporter whose connection broke: once every RETRY s, ask it over a fresh connection (the channel
        connects again) whether it answers, and lease it if it does."""
        assert self.unanswered is not None
        if time.monotonic() - self._tried < RETRY:
            return self.unanswered
        self._tried = time.monotonic()
        try:
            connection.report(CONNECT_TIMEOUT)
            got = try_lease(connection, holder, keep=self.keep)
        except JumpstarterError as exc:
            self._check_alive(connection, exc)
            silent = time.monotonic() - self._broke
            if silent >= GRACE:
                self.gone = f"exporter {self.name} can't be reached: it has not answered for {silent:.0f} s: {exc}"
                raise ConnectError(self.failure() or self.gone) from None
            return self.unanswered
        self.unanswered = None
        return got

    def _check_alive(self, connection: Connection, exc: Exception, dying: float = 0) -> None:
        """Mark it gone (ConnectError) if it is known dead: its process ended (``dying``: seconds to give one that
        is ending), or nothing listens at its address any more. A frozen or busy exporter still takes connections."""
        if accepts_connections(connection.target) is False:
            # A dying exporter's socket closes a moment before its process ends: give it DYING s to say how it ended.
            self.exit_code(wait=max(dying, DYING))
            self.gone = f"exporter {self.name} can't be reached: nothing listens at {connection.address}: {exc}"
        self.gone = self.failure() or self.gone
        if self.gone:
            raise ConnectError(self.gone) from None

    def stop_waiting(self) -> None:
        """Tell it we no longer wait for it (see ``try_lease``)."""
        if self._root is not None:
            stop_waiting(self._root.connection)

    def failure(self) -> str | None:
        """Why this exporter can't be used any more (it died, or is gone), or None."""
        return self.gone and (self.stopped() or self.gone)

    def stopped(self) -> str | None:
        """Why it stopped by itself (a hook whose onFailure is exit failed), as it noted; None if it didn't."""
        return read_stop_note(self.stop_note, self.name)

    def handoff(self) -> dict[str, Any]:
        """What an xdist worker needs to use this exporter (see ``RemoteExporter``)."""
        failure = None
        try:
            address = self.address
        except (ExporterStartError, JumpstarterError, OSError) as exc:
            address, failure = "", f"jumpstarter: {exc}"
        return {
            "spec": self.spec,
            "name": self.name,
            "address": address,
            "tls": self.tls,
            "exports": self.exports,
            "export_names": self.export_names,
            "descendants": self.descendants,
            "labels": self.labels,
            "failure": failure or self.failure(),
            "stop_note": self.stop_note,
            "refused": self.refused and not failure,
        }

    def output(self, since: int = 0) -> str:
        return ""

    def exit_code(self, wait: float = 0) -> int | None:
        """The exit code of the exporter's process once it has ended (one the plugin started), else None;
        ``wait``: seconds to give a process that is ending."""
        return None

    @property
    def log_position(self) -> int:
        return 0

    def close(self) -> None:
        self._root = None
        self._stack.close()


class AddressExporter(Exporter):
    """An exporter that already runs; its exports and labels are read from it at start-up."""

    def __init__(self, spec: str, passphrase: str | None, tls: TLS = False) -> None:
        super().__init__(spec, passphrase, tls)
        root = self.client()
        self.name_exports(list(root.children))
        self.descendants = _paths({name: child.children for name, child in root.children.items()})
        self.labels = dict(root.connection.report().labels)
        self.name = self.labels.get(NAME_LABEL) or spec  # ours label themselves with their name


class RemoteExporter(Exporter):
    """In an xdist worker: an exporter the controlling process started or reached, by its handoff."""

    def __init__(self, handoff: dict[str, Any], passphrase: str | None) -> None:
        super().__init__(handoff["spec"], passphrase, handoff["tls"])
        self.name, self.exports, self.labels = handoff["name"], handoff["exports"], handoff["labels"]
        self.export_names = handoff["export_names"]
        self.descendants = handoff["descendants"]
        self._address, self.gone, self.refused = handoff["address"], handoff["failure"], handoff["refused"]
        self.stop_note = handoff["stop_note"]

    def _open(self):
        if self.gone:
            raise ConnectError(self.gone)
        return connect(self._address, passphrase=self.passphrase, tls=self.tls)


class YamlExporter(Exporter):
    """An exporter the plugin starts from an ExporterConfig, in a child process or in-process. ``launch``: its
    process, already started (else it is started on first use)."""

    def __init__(
        self, spec: str, passphrase: str | None, mode: str, start_timeout: float, launch: Launch | None = None
    ) -> None:
        super().__init__(spec, passphrase)
        self.launch = launch
        if launch is not None:
            self._stack.callback(launch.stop)  # stopped even if its config is refused below
        self.config = ExporterConfig.load(spec)  # ConfigError now, at start-up, not once per test
        self.config.check()
        if launch is not None:
            self._launched(launch)
        self.name = self.config.name or Path(spec).stem
        self.name_exports(list(self.config.export))
        self.descendants = _paths({name: entry.children for name, entry in self.config.export.items()})
        self.labels = dict(self.config.labels)
        self.mode, self.start_timeout = mode, start_timeout
        self.process: ExporterProcess | None = None  # once it has served

    def describe(self) -> str:
        return f"{self.spec} ({self.mode})"

    def _open(self):
        if self.mode == "inprocess":
            from jumpstarter.inprocess import serve

            return serve(self.config.instantiate(), passphrase=self.passphrase, hooks=self.config.hooks)
        if self.launch is None:
            self.launch = Launch(self.spec, self.passphrase, self.start_timeout)
            self._stack.callback(self.launch.stop)
            self._launched(self.launch)
        self.process = self.launch.wait()
        return connect(self.process.address, passphrase=self.passphrase)

    def _launched(self, launch: Launch) -> None:
        """Read ``launch``'s stop note; give its stop the time an afterLease hook may take to tidy the board (it
        runs when the exporter stops, see jumpstarter.exporter.holders)."""
        self.stop_note = launch.stop_note
        after = self.config.hooks.after_lease
        launch.stop_timeout = STOP_TIMEOUT + (after.timeout if after is not None else 0)

    def failure(self) -> str | None:
        if self.process is not None and not self.process.alive:
            if self.stopped():
                return self.stopped()
            tail = "".join(self.process.lines[-20:]).rstrip()
            return f"exporter {self.spec} died (exit code {self.process.returncode}); its last output:\n{tail}"
        return self.gone

    def output(self, since: int = 0) -> str:
        return self.process.output(since) if self.process else ""

    def exit_code(self, wait: float = 0) -> int | None:
        if self.process is None:
            return None
        if wait:
            with suppress(subprocess.TimeoutExpired):
                self.process.process.wait(wait)
        return self.process.returncode

    @property
    def log_position(self) -> int:
        return len(self.process.lines) if self.process else 0


def _paths(exports: dict[str, dict[str, Any]]) -> list[str]:
    """Dotted paths of every driver below the exports, from a mapping of export name to its children (config
    entries or clients, whichever have ``children``)."""
    found: list[str] = []

    def walk(prefix: str, children: dict[str, Any]) -> None:
        for name, child in children.items():
            found.append(f"{prefix}.{name}")
            walk(f"{prefix}.{name}", child.children)

    for name, children in exports.items():
        walk(name, children)
    return found


def unique_names(exporters: list[Exporter]) -> None:
    """Give exporters that share a name a numbered suffix: names become test ids in matrix mode."""
    seen: dict[str, int] = {}
    for exporter in exporters:
        count = seen.get(exporter.name, 0)
        seen[exporter.name] = count + 1
        if count:
            exporter.name = f"{exporter.name}-{count + 1}"


def load(
    specs: tuple[str, ...],
    handoffs: list[dict] | None,
    passphrase: str | None,
    mode: str,
    tls: TLS,
    start_timeout: float,
    launches: dict[str, Launch] | None = None,
) -> list[Exporter]:
    """The session's exporters: in an xdist worker, those the controlling process handed over (``handoffs``);
    else one per ``--exporter`` spec, a YAML started by the plugin or a running exporter's address. ``launches``:
    the processes of YAML specs, already started. A spec that can't be used is a usage error naming it (the
    exporters made so far are closed)."""
    if handoffs is not None:
        exporters: list[Exporter] = [RemoteExporter(h, passphrase) for h in handoffs]
    else:
        exporters = []
        for spec in specs:
            try:
                launch = (launches or {}).pop(spec, None)
                exporter = YamlExporter(spec, passphrase, mode, start_timeout, launch) if is_yaml(spec) else None
                exporters.append(exporter or AddressExporter(spec, passphrase, tls))
            except (JumpstarterError, OSError) as exc:
                for made in exporters:
                    made.close()
                raise pytest.UsageError(f"jumpstarter: --exporter {spec}: {exc}") from None
    unique_names(exporters)
    return exporters
