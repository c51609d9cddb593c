"""The plugin's settings: each has a command-line option, an ini key and an environment variable.

Precedence: command line > environment > ini file; for the settings in PER_TEST, a
``@pytest.mark.jumpstarter(...)`` marker beats them all. Last come the variables a `jmp shell`
(upstream's or ours) gives its command: `jmp shell ... -- pytest` tests the shell's exporter.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pytest

from jumpstarter.utils.env import JMP_GRPC_PASSPHRASE, JUMPSTARTER_HOST

Choice = TypeVar("Choice", bound=str)
Scope = Literal["function", "module", "session"]  # how long a lease, and the export fixtures, are kept


@dataclass(frozen=True)
class Setting:
    option: str  # command-line flag
    ini: str
    env: str
    help: str
    kind: str = "string"  # "string", "list" or "bool"
    default: object = None
    shell_env: str = ""  # the variable a surrounding `jmp shell` sets, used when nothing else is
    metavar: str = "VALUE"  # how --help shows the option's value

    @property
    def dest(self) -> str:
        return "jumpstarter_" + self.ini.removeprefix("jumpstarter_")


EXPORTERS = Setting(
    "--exporter",
    "jumpstarter_exporters",
    "JUMPSTARTER_EXPORTERS",
    "an exporter to test with: an ExporterConfig YAML (started by the plugin) or the address of a running "
    "exporter (HOST:PORT, unix:///path). Repeatable. Inside `jmp shell`: the shell's exporter.",
    kind="list",
    default=(),
    shell_env=JUMPSTARTER_HOST,
    metavar="YAML|ADDRESS",
)
PASSPHRASE = Setting(
    "--exporter-passphrase",
    "jumpstarter_passphrase",
    "JUMPSTARTER_PASSPHRASE",
    "passphrase for exporters given by address, and required by exporters the plugin starts",
    shell_env=JMP_GRPC_PASSPHRASE,
    metavar="PASSPHRASE",
)
TLS = Setting(
    "--exporter-tls",
    "jumpstarter_tls",
    "JUMPSTARTER_TLS",
    "reach exporters given by address over TLS, trusting this CA certificate (PEM), or 'system' for the "
    "system's CAs; default: plain gRPC (inside a TLS `jmp shell`: TLS)",
    metavar="CA_FILE|system",
)
MODE = Setting(
    "--exporter-mode",
    "jumpstarter_mode",
    "JUMPSTARTER_MODE",
    "how YAML exporters run: 'subprocess' (default; a crashing driver can't take pytest down) or 'inprocess'",
    default="subprocess",
    metavar="subprocess|inprocess",
)
LOG = Setting(
    "--jumpstarter-log",
    "jumpstarter_log",
    "JUMPSTARTER_LOG",
    "show every driver call live (a failing test's report lists its calls anyway)",
    kind="bool",
    default=False,
)
START_TIMEOUT = Setting(
    "--exporter-start-timeout",
    "jumpstarter_start_timeout",
    "JUMPSTARTER_START_TIMEOUT",
    "seconds to wait for a YAML exporter to serve (default 60)",
    default="60",
    metavar="SECONDS",
)
LEASE_TIMEOUT = Setting(
    "--lease-timeout",
    "jumpstarter_lease_timeout",
    "JUMPSTARTER_LEASE_TIMEOUT",
    "seconds a test waits for a free exporter before it fails naming who holds them (default 300)",
    default="300",
    metavar="SECONDS",
)
CALL_TIMEOUT = Setting(
    "--call-timeout",
    "jumpstarter_call_timeout",
    "JUMPSTARTER_CALL_TIMEOUT",
    "seconds a driver call may take before it fails the test naming the call (default 900; 0: no limit; "
    "generators and byte streams have none)",
    default="900",
    metavar="SECONDS",
)
LEASE_SCOPE = Setting(
    "--lease-scope",
    "jumpstarter_lease_scope",
    "JUMPSTARTER_LEASE_SCOPE",
    "how long a lease is kept: 'function' (default, one test), 'module' or 'session' (for expensive set-up)",
    default="function",
    metavar="function|module|session",
)
MATRIX = Setting(
    "--exporter-matrix",
    "jumpstarter_matrix",
    "JUMPSTARTER_MATRIX",
    "run each test that uses an export once per exporter that fits it, the exporter's name in the test id",
    kind="bool",
    default=False,
)
RECORD = Setting(
    "--jumpstarter-record",
    "jumpstarter_record",
    "JUMPSTARTER_RECORD",
    "write every driver call the tests make through their fixtures to recordings under this folder (a YAML file "
    "per test module), for --jumpstarter-replay",
    metavar="DIR",
)
REPLAY = Setting(
    "--jumpstarter-replay",
    "jumpstarter_replay",
    "JUMPSTARTER_REPLAY",
    "run with no exporter: the export fixtures answer from the recordings under this folder, and a test whose "
    "calls differ from its recording fails",
    metavar="DIR",
)
TIMELINE = Setting(
    "--jumpstarter-timeline",
    "jumpstarter_timeline",
    "JUMPSTARTER_TIMELINE",
    "write a chart of the run to this HTML file: a row per exporter, a bar per lease (the test, its outcome), "
    "the waits before them, exporters that died",
    metavar="FILE.html",
)
HISTORY = Setting(
    "--jumpstarter-history",
    "jumpstarter_history",
    "JUMPSTARTER_HISTORY",
    "append this run's leases, outcomes, health checks and retries to this SQLite file, the lab's memory across "
    "runs (`jumpstarter health FILE.db` reads it)",
    metavar="FILE.db",
)
QUARANTINE = Setting(
    "--jumpstarter-quarantine",
    "jumpstarter_quarantine",
    "JUMPSTARTER_QUARANTINE",
    "with --jumpstarter-history: keep the boards its health report flags as suspects out of this run, unless no "
    "other board fits a test",
    kind="bool",
    default=False,
)
RETRY_ELSEWHERE = Setting(
    "--jumpstarter-retry-elsewhere",
    "jumpstarter_retry_elsewhere",
    "JUMPSTARTER_RETRY_ELSEWHERE",
    "run a test that fails again, up to N times, each time on a fitting board it hasn't failed on; the run's end "
    "says which failures were the code's, a board's, or flaky (default 0: no retry)",
    default="0",
    metavar="N",
)
HEALTH_CHECKS = Setting(
    "--jumpstarter-health-check",
    "jumpstarter_health_checks",
    "JUMPSTARTER_HEALTH_CHECKS",
    "a collected test (PATH::NAME, relative to the rootdir) that is a board's health check, as if marked "
    "@pytest.mark.jumpstarter_health. Repeatable.",
    kind="list",
    default=(),
    metavar="PATH::NAME",
)
LAB = Setting(
    "--lab",
    "jumpstarter_lab",
    "JUMPSTARTER_LAB",
    "take exporters from a labgrid lab: labgrid://HOST:PORT of its coordinator, which queues the claims (tags from "
    "@pytest.mark.exporter labels and --lab-tag) while each exporter's own lease stays the lock",
    metavar="labgrid://HOST:PORT",
)
LAB_TAG = Setting(
    "--lab-tag",
    "jumpstarter_lab_tags",
    "JUMPSTARTER_LAB_TAGS",
    "with --lab: only places carrying this tag. Repeatable.",
    kind="list",
    default=(),
    metavar="KEY=VALUE",
)
LAB_PRIORITY = Setting(
    "--lab-priority",
    "jumpstarter_lab_priority",
    "JUMPSTARTER_LAB_PRIORITY",
    "with --lab: the priority of this run's reservations (higher goes first; default 0)",
    default="0",
    metavar="N",
)
SETTINGS = (
    EXPORTERS,
    PASSPHRASE,
    TLS,
    MODE,
    LOG,
    START_TIMEOUT,
    LEASE_TIMEOUT,
    CALL_TIMEOUT,
    LEASE_SCOPE,
    MATRIX,
    RECORD,
    REPLAY,
    TIMELINE,
    HISTORY,
    QUARANTINE,
    RETRY_ELSEWHERE,
    HEALTH_CHECKS,
    LAB,
    LAB_TAG,
    LAB_PRIORITY,
)
# Settings a test may override with @pytest.mark.jumpstarter(key=value): marker > command line > env > ini.
PER_TEST = ("log", "lease_timeout", "call_timeout")
MODES = ("subprocess", "inprocess")
SCOPES: tuple[Scope, ...] = ("function", "module", "session")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("jumpstarter", "jumpstarter (hardware-in-the-loop testing)")
    for s in SETTINGS:
        twins = f" [ini: {s.ini}; env: {s.env}]"
        if s.kind == "list":
            group.addoption(s.option, action="append", dest=s.dest, metavar=s.metavar, help=s.help + twins)
            parser.addini(s.ini, s.help + " One per line.", type="linelist")
        elif s.kind == "bool":
            group.addoption(s.option, action="store_true", default=None, dest=s.dest, help=s.help + twins)
            parser.addini(s.ini, s.help, type="bool", default=False)
        else:
            group.addoption(s.option, dest=s.dest, metavar=s.metavar, help=s.help + twins)
            parser.addini(s.ini, s.help)


_TRUE = {"1", "true", "yes", "on"}


def resolve(config: pytest.Config, s: Setting, options: argparse.Namespace | None = None) -> tuple[object, str]:
    """The value of ``s`` and where it came from ("command line", "env NAME", "ini", "default"); ``options``:
    command-line options parsed before pytest has (see launch.start_held)."""
    value = config.getoption(s.dest) if options is None else getattr(options, s.dest, None)
    if value:
        return (tuple(value) if s.kind == "list" else value), "command line"
    raw = os.environ.get(s.env, "").strip()
    if raw:
        if s.kind == "list":
            return tuple(v for v in re.split(r"[\s,]+", raw) if v), f"env {s.env}"
        if s.kind == "bool":
            return raw.lower() in _TRUE, f"env {s.env}"
        return raw, f"env {s.env}"
    ini = config.getini(s.ini)
    if ini:
        if s.kind == "list":
            base = config.inipath.parent if config.inipath else config.rootpath
            return tuple(_relative_to(v, base) for v in ini), f"ini {s.ini}"
        return ini, f"ini {s.ini}"
    shell = os.environ.get(s.shell_env, "").strip() if s.shell_env else ""
    if shell:
        return ((shell,) if s.kind == "list" else shell), f"env {s.shell_env} (jmp shell)"
    return s.default, "default"


def _relative_to(spec: str, base) -> str:
    """YAML paths in an ini file are relative to that file."""
    if spec.endswith((".yaml", ".yml")) and not os.path.isabs(spec):
        return str(base / spec)
    return spec


MARKER = "jumpstarter"  # @pytest.mark.jumpstarter(**settings): a test's own PER_TEST settings


class Values:
    """The session's settings, each resolved once with where it came from, and the checks that go with them:
    a bad session setting stops the run (a usage error naming its source); a bad marker fails its test."""

    def __init__(self, config: pytest.Config) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        for s in SETTINGS:
            key = s.ini.removeprefix("jumpstarter_")
            self.values[key], self.sources[key] = resolve(config, s)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def choice(self, key: str, allowed: tuple[Choice, ...]) -> Choice:
        value = self.values[key]
        if value not in allowed:
            raise pytest.UsageError(
                f"jumpstarter: {key.replace('_', ' ')} {value!r} ({self.sources[key]}) "
                f"must be one of {', '.join(allowed)}"
            )
        return value

    def seconds(self, key: str, item: pytest.Item | None = None) -> float:
        """Setting ``key`` in seconds; for ``item``, its marker's value first (PER_TEST settings)."""
        value, where = self.per_test(item, key)
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
        message = f"jumpstarter: {key.replace('_', ' ')} {value!r} ({where}) is not a number"
        if where != self.sources[key]:
            pytest.fail(message, pytrace=False)
        raise pytest.UsageError(message)

    def per_test(self, item: pytest.Item | None, key: str) -> tuple[Any, str]:
        """A PER_TEST setting for ``item``: its marker's value, else the session's; and where it came from."""
        for marker in item.iter_markers(MARKER) if item is not None else ():
            unknown = set(marker.kwargs) - set(PER_TEST)
            if unknown:
                pytest.fail(
                    f"@pytest.mark.{MARKER}: unknown setting {', '.join(sorted(unknown))} "
                    f"(per-test settings: {', '.join(PER_TEST)})",
                    pytrace=False,
                )
            if key in marker.kwargs and item is not None:
                return marker.kwargs[key], f"@pytest.mark.{MARKER} of {item.nodeid}"
        return self.values[key], self.sources[key]

    def count(self, key: str) -> int:
        """Setting ``key`` as a whole number >= 0 (a usage error naming its source otherwise)."""
        value = self.values[key]
        try:
            number = int(str(value))
        except ValueError:
            number = -1
        if number < 0:
            raise pytest.UsageError(
                f"jumpstarter: {key.replace('_', ' ')} {value!r} ({self.sources[key]}) is not a whole number >= 0"
            )
        return number

    def tls(self) -> bool | str:
        """How exporters given by address are reached: False (plain gRPC), True (system CAs) or a CA file."""
        from jumpstarter.utils.env import shell_tls

        value = self.values["tls"] or ""
        if not value:  # a TLS `jmp shell` around pytest: its exporter speaks TLS
            shell = self.sources["exporters"].startswith(f"env {JUMPSTARTER_HOST}")
            return shell and shell_tls(self.values["exporters"][0])
        if value == "system":
            return True
        if not os.path.isfile(value):
            raise pytest.UsageError(
                f"jumpstarter: --exporter-tls {value} ({self.sources['tls']}): no such CA certificate file"
            )
        return os.path.abspath(value)

    def others(self) -> str:
        """Every setting but the exporters, with its source: for the report header."""
        return ", ".join(f"{k}={v!r} ({self.sources[k]})" for k, v in self.values.items() if k != "exporters")
