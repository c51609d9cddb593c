"""Starting the processes of YAML exporters. Imports nothing heavy, so that they can start first thing: held as
the plugin loads (``start_held``), let go at configure time (``Lab._launch``); each exporter starts up while pytest
imports the client (grpc and all) and collects, and a test that needs it waits only for what is left."""

from __future__ import annotations

import atexit
import os
import shlex
import sys
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import cast

import pytest

from jumpstarter.exporter.process import ExporterProcess, ExporterStartError
from jumpstarter.exporter.stopnote import STOP_NOTE_ENV
from pytest_jumpstarter import settings

STOP_TIMEOUT = 10.0  # seconds a stopped exporter has to close its drivers before it is killed

# Options (their dest) of a pytest run that runs no test: no exporter is started for it.
NO_TESTS = ("collectonly", "help", "showfixtures", "show_fixtures_per_test", "markers", "version")


def is_yaml(spec: str) -> bool:
    """Whether an --exporter spec names an ExporterConfig file (else it is a running exporter's address)."""
    return spec.endswith((".yaml", ".yml")) or Path(spec).is_file()


class Launch:
    """``jumpstarter run SPEC`` serving on a unix socket in a private temporary folder, started now and awaited
    by ``wait()``; ``start_timeout``: seconds it has to serve. ``held``: started with ``--hold``, it makes no
    driver until ``release()``."""

    def __init__(self, spec: str, passphrase: str | None, start_timeout: float, held: bool = False) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="jumpstarter-pytest-")
        socket = Path(self._folder.name) / "exporter.sock"
        self.stop_note = str(Path(self._folder.name) / "stopped.json")  # why it stopped by itself (stopnote.py)
        env = {"JUMPSTARTER_PASSPHRASE": passphrase} if passphrase else {}
        env[STOP_NOTE_ENV] = self.stop_note
        hold = ("--hold",) if held else ()
        self.process = ExporterProcess(spec, "--listen", f"unix://{socket}", *hold, env=env)
        self.start_timeout = start_timeout
        self.stop_timeout = STOP_TIMEOUT  # seconds from SIGTERM to SIGKILL (YamlExporter adds an afterLease's)
        self.held = held
        # What the exporter was started with, for release() to check against what it would be started with now.
        self.started_with = (passphrase, dict(os.environ), os.getcwd())

    def release(self, passphrase: str | None, start_timeout: float) -> bool:
        """Let a held exporter go, if it was started as it would be now (same passphrase, environment and
        folder: a conftest.py may have set a variable meanwhile); False, and it is stopped, if not."""
        if self.started_with != (passphrase, dict(os.environ), os.getcwd()):
            self.stop()
            return False
        self.held = False
        self.start_timeout = start_timeout
        self.process.release()
        return True

    def wait(self) -> ExporterProcess:
        """The process, once it serves; ExporterStartError, with its output, if it exits or hangs instead."""
        self.process.wait_ready(self.start_timeout)
        return self.process

    def stop(self) -> None:
        """Stop the exporter and remove its folder; again is harmless. One still starting is let serve first (up to
        its start timeout): SIGTERM would close the drivers made so far once the one being made is, but stop() kills
        after 10 s, which a driver slow to make could outlast. One held has made none."""
        if not self.held:
            with suppress(ExporterStartError):
                self.wait()
        self.process.stop(self.stop_timeout)
        self._folder.cleanup()


_READ_EARLY = (settings.EXPORTERS, settings.PASSPHRASE, settings.MODE, settings.REPLAY)

# Started by start_held, until Lab._launch takes them (or the run ends first: a usage error, --version).
_held: dict[str, Launch] = {}


def start_held(parser: pytest.Parser, config: pytest.Config | None) -> None:
    """Start the YAML exporters the settings name, held, as the plugin loads: ~0.1 s before configure, which
    lets them go (``take_held``). The settings are read as configure will read them, but from the command line
    parsed ahead of pytest (the ini file and environment are already known); any doubt, and configure starts
    them itself."""
    if config is None or _xdist_worker():
        return
    try:
        args = [*config.getini("addopts"), *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
        options = parser.parse_known_args([*args, *config.invocation_params.args])
        if any(getattr(options, name, False) for name in NO_TESTS):
            return
        setting = {s: settings.resolve(config, s, options)[0] for s in _READ_EARLY}
        if setting[settings.REPLAY] or setting[settings.MODE] != "subprocess":
            return
        specs = [spec for spec in dict.fromkeys(cast(tuple, setting[settings.EXPORTERS])) if is_yaml(spec)]
        passphrase = cast("str | None", setting[settings.PASSPHRASE]) or None
    except (Exception, SystemExit):  # configure reads the settings again, and says what is wrong
        return
    if specs and not _held:
        atexit.register(stop_held)
    for spec in specs:
        _held[spec] = Launch(spec, passphrase, 0, held=True)  # its start timeout is set by release()


def _xdist_worker() -> bool:
    """Whether this process is a pytest-xdist worker, which uses the exporters of the process that runs it. Its
    config doesn't say so yet; xdist has set PYTEST_XDIST_WORKER, and started it with ``python -c``: a pytest run
    from within a worker (pytester's) inherits the variable, not the ``-c``."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER")) and sys.argv[:1] == ["-c"]


def take_held(spec: str, passphrase: str | None, start_timeout: float) -> Launch | None:
    """The exporter of ``spec`` started by start_held, let go; None if there is none, or it was started otherwise
    than it would be now."""
    launch = _held.pop(spec, None)
    if launch is not None and launch.release(passphrase, start_timeout):
        return launch
    return None


def stop_held() -> None:
    """Stop the held exporters nobody took."""
    while _held:
        _held.popitem()[1].stop()
