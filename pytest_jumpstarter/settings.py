"""The plugin's settings: each has a command-line option, an ini key and an environment variable.

Precedence: command line > environment > ini file; for the settings in PER_TEST, a
``@pytest.mark.jumpstarter(...)`` marker beats them all. Last come the variables a `jmp shell`
(upstream's or ours) gives its command: `jmp shell ... -- pytest` tests the shell's exporter.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pytest

from jumpstarter.utils.env import JMP_GRPC_PASSPHRASE, JUMPSTARTER_HOST


@dataclass(frozen=True)
class Setting:
    option: str  # command-line flag
    ini: str
    env: str
    help: str
    kind: str = "string"  # "string", "list" or "bool"
    default: object = None
    shell_env: str = ""  # the variable a surrounding `jmp shell` sets, used when nothing else is

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
)
PASSPHRASE = Setting(
    "--exporter-passphrase",
    "jumpstarter_passphrase",
    "JUMPSTARTER_PASSPHRASE",
    "passphrase for exporters given by address, and required by exporters the plugin starts",
    shell_env=JMP_GRPC_PASSPHRASE,
)
TLS = Setting(
    "--exporter-tls",
    "jumpstarter_tls",
    "JUMPSTARTER_TLS",
    "reach exporters given by address over TLS, trusting this CA certificate (PEM), or 'system' for the "
    "system's CAs; default: plain gRPC (inside a TLS `jmp shell`: TLS)",
)
MODE = Setting(
    "--exporter-mode",
    "jumpstarter_mode",
    "JUMPSTARTER_MODE",
    "how YAML exporters run: 'subprocess' (default; a crashing driver can't take pytest down) or 'inprocess'",
    default="subprocess",
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
)
LEASE_TIMEOUT = Setting(
    "--lease-timeout",
    "jumpstarter_lease_timeout",
    "JUMPSTARTER_LEASE_TIMEOUT",
    "seconds a test waits for a free exporter before it fails naming who holds them (default 300)",
    default="300",
)
LEASE_SCOPE = Setting(
    "--lease-scope",
    "jumpstarter_lease_scope",
    "JUMPSTARTER_LEASE_SCOPE",
    "how long a lease is kept: 'function' (default, one test), 'module' or 'session' (for expensive set-up)",
    default="function",
)
MATRIX = Setting(
    "--exporter-matrix",
    "jumpstarter_matrix",
    "JUMPSTARTER_MATRIX",
    "run each test that uses an export once per exporter that fits it, the exporter's name in the test id",
    kind="bool",
    default=False,
)
SETTINGS = (EXPORTERS, PASSPHRASE, TLS, MODE, LOG, START_TIMEOUT, LEASE_TIMEOUT, LEASE_SCOPE, MATRIX)
# Settings a test may override with @pytest.mark.jumpstarter(key=value): marker > command line > env > ini.
PER_TEST = ("log", "lease_timeout")
MODES = ("subprocess", "inprocess")
SCOPES = ("function", "module", "session")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("jumpstarter", "jumpstarter (hardware-in-the-loop testing)")
    for s in SETTINGS:
        twins = f" [ini: {s.ini}; env: {s.env}]"
        if s.kind == "list":
            group.addoption(s.option, action="append", dest=s.dest, metavar="YAML|ADDRESS", help=s.help + twins)
            parser.addini(s.ini, s.help + " One per line.", type="linelist")
        elif s.kind == "bool":
            group.addoption(s.option, action="store_true", default=None, dest=s.dest, help=s.help + twins)
            parser.addini(s.ini, s.help, type="bool", default=False)
        else:
            group.addoption(s.option, dest=s.dest, help=s.help + twins)
            parser.addini(s.ini, s.help)


_TRUE = {"1", "true", "yes", "on"}


def resolve(config: pytest.Config, s: Setting) -> tuple[object, str]:
    """The value of ``s`` and where it came from ("command line", "env NAME", "ini", "default")."""
    value = config.getoption(s.dest)
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
