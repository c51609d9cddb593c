"""The command line's grammar, and the checks of what was given that argparse can't express."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from jumpstarter.cli.serve import PASSPHRASE_ENV
from jumpstarter.errors import ConfigError
from jumpstarter.exporter.limits import (
    MAX_MESSAGE_ENV,
    MAX_UPLOADS_ENV,
    MIB,
    MOST_MESSAGE_MIB,
    UPLOAD_MEMORY_ENV,
    Limits,
    too_big,
)
from jumpstarter.history import DEFAULT_DAYS


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jumpstarter")
    except PackageNotFoundError:  # run from a source tree that isn't installed
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """--version, looked up only when asked: reading the installed metadata would slow every start (~15 ms)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jumpstarter", description="Hardware-in-the-loop test runtime.")
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="serve the drivers of an ExporterConfig YAML")
    run_parser.add_argument(
        "config",
        nargs="?",
        help="ExporterConfig YAML file, or the NAME of one in the exporters' folders (as upstream's --exporter)",
    )
    run_parser.add_argument(
        "--listen",
        metavar="ADDRESS",
        help="HOST:PORT for TCP, or unix:///path; default: a unix socket in the user's runtime directory",
    )
    # Upstream's `jmp run --exporter-config FILE --tls-grpc-listener A --tls-grpc-insecure`, so a lab's
    # command line carries over.
    run_parser.add_argument("--exporter-config", metavar="FILE", help="the ExporterConfig, as upstream names it")
    run_parser.add_argument(
        "--exporter",
        metavar="NAME",
        help="NAME.yaml of the user's exporters folder (~/.config/jumpstarter/exporters), else of "
        "/etc/jumpstarter/exporters, as upstream's `jmp run --exporter NAME`",
    )
    run_parser.add_argument(
        "--tls-grpc-listener",
        metavar="ADDRESS",
        help="--listen, as upstream names it; with --tls-grpc-insecure, or with --tls-cert and --tls-key",
    )
    run_parser.add_argument("--tls-grpc-insecure", action="store_true", help="serve plain gRPC (no TLS)")
    run_parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    run_parser.add_argument("--tls-key", metavar="FILE", help="the private key (PEM) of --tls-cert")
    run_parser.add_argument(
        "--passphrase",
        help=f"require this passphrase from clients; default: none. Other users see a command line (ps): "
        f"prefer {PASSPHRASE_ENV}",
    )
    run_parser.add_argument("-v", "--verbose", action="store_true", help="log every driver error with its traceback")
    run_parser.add_argument(
        "--max-message-size",
        type=_message_size,
        metavar="MIB",
        help=f"the largest request a client may send (a call's arguments), in MiB; default: {MAX_MESSAGE_ENV} or "
        f"{Limits.max_message // MIB}",
    )
    run_parser.add_argument(
        "--upload-memory",
        type=_positive,
        metavar="MIB",
        help="the bytes of uploads not yet read by their drivers that the exporter holds, all together, in MiB "
        f"(a sender waits beyond); default: {UPLOAD_MEMORY_ENV} or {Limits.upload_memory // MIB}",
    )
    run_parser.add_argument(
        "--max-uploads",
        type=_positive,
        metavar="N",
        help=f"the uploads open at once (more are refused); default: {MAX_UPLOADS_ENV} or {Limits.max_uploads}",
    )
    run_parser.add_argument(
        "--hold",
        action="store_true",
        help="read the config and import the drivers' modules, then wait for a line on standard input before "
        "making the drivers and serving; end, having touched none, if standard input ends first (the pytest "
        "plugin starts exporters so as it loads, to be let go at configure)",
    )
    run_parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="stop (as on SIGTERM) when standard input ends: run under a process that holds a pipe to it, this "
        "exporter ends with that process, even one killed with SIGKILL (the pytest plugin runs exporters so)",
    )
    run_parser.add_argument(
        "--labgrid",
        metavar="HOST:PORT",
        help="publish this exporter (address, TLS yes/no, exports, labels; never the passphrase) to the labgrid "
        "coordinator there, as a place of its name, until it stops (needs --listen HOST:PORT and jumpstarter[labgrid])",
    )
    run_parser.add_argument(
        "--labgrid-place",
        metavar="NAME",
        help="with --labgrid: publish into place NAME, shared with the other exporters of one board (its power "
        "served from one host, its serial console from another), instead of a place of this exporter's name",
    )
    shell_parser = commands.add_parser(
        "shell", help="run a command (default: your shell) connected to an exporter, as upstream's `jmp shell`"
    )
    shell_parser.usage = (
        "jumpstarter shell [-h] [ADDRESS | --tls-grpc ADDRESS [--tls-grpc-insecure]] [--tls-ca FILE] "
        "[--passphrase P] [-- COMMAND ...]"
    )
    shell_parser.add_argument("address", nargs="?", help="HOST:PORT or unix:///path of a running exporter")
    shell_parser.add_argument(
        "--tls-grpc", metavar="ADDRESS", help="the address of an exporter serving TLS (as upstream spells it)"
    )
    shell_parser.add_argument("--tls-grpc-insecure", action="store_true", help="with --tls-grpc: plain gRPC instead")
    shell_parser.add_argument(
        "--tls-ca", metavar="FILE", help="speak TLS, trusting this CA certificate (PEM); default: the system's CAs"
    )
    shell_parser.add_argument("--passphrase", help=f"the exporter's passphrase (or set {PASSPHRASE_ENV})")
    lab_parser = commands.add_parser(
        "lab", help="list a labgrid lab's places: their tags, holders, and the state of our exporters on them"
    )
    lab_parser.add_argument("url", metavar="labgrid://HOST:PORT", help="the lab's coordinator")
    lab_parser.add_argument("--passphrase", help=f"the exporters' passphrase (or set {PASSPHRASE_ENV})")
    inspect_parser = commands.add_parser(
        "inspect", help="show a running exporter's drivers, their exported methods and their clients' signatures"
    )
    inspect_parser.add_argument("address", help="HOST:PORT or unix:///path of a running exporter")
    inspect_parser.add_argument("--tls-ca", metavar="FILE", help="speak TLS, trusting this CA certificate (PEM)")
    inspect_parser.add_argument("--passphrase", help=f"the exporter's passphrase (or set {PASSPHRASE_ENV})")
    health_parser = commands.add_parser(
        "health", help="per board, what the history of runs (pytest --jumpstarter-history) says; flags suspects"
    )
    health_parser.add_argument("history", help="the history file (SQLite) the runs appended to")
    health_parser.add_argument("--html", metavar="FILE.html", help="also draw it over time in this HTML file")
    health_parser.add_argument(
        "--days",
        type=float,
        default=DEFAULT_DAYS,
        help=f"read the runs of the last DAYS days (default {DEFAULT_DAYS:g}; 0: all of them)",
    )
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, 1 or more")
    return value


def _message_size(text: str) -> int:
    value = _positive(text)
    if value > MOST_MESSAGE_MIB:
        raise argparse.ArgumentTypeError(too_big(text, MOST_MESSAGE_MIB))
    return value


def _check_shell_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.address and args.tls_grpc:
        parser.error(f"give the address once: {args.address!r} or --tls-grpc {args.tls_grpc!r}")
    if args.tls_grpc_insecure and args.tls_ca:
        parser.error("--tls-grpc-insecure (plain gRPC) and --tls-ca (TLS) contradict each other")
    if args.tls_ca and not os.path.isfile(args.tls_ca):
        parser.error(f"--tls-ca {args.tls_ca}: no such CA certificate file")
    args.address = args.address or args.tls_grpc
    if not args.address:
        parser.error("the exporter's address is required (jumpstarter shell HOST:PORT -- COMMAND)")


def _check_run_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = [
        f"{what}{value!r}"
        for what, value in (
            ("", args.config),
            ("--exporter-config ", args.exporter_config),
            ("--exporter ", args.exporter),
        )
        if value
    ]
    if len(given) > 1:
        parser.error(f"give the config once: {' or '.join(given)}")
    if args.exporter or (args.config and is_config_name(args.config)):
        args.config = str(_named_config(parser, args.exporter or args.config))
    args.config = args.config or args.exporter_config
    if not args.config:
        parser.error("the ExporterConfig YAML file is required (jumpstarter run CONFIG)")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("TLS needs both --tls-cert and --tls-key")
    if args.tls_cert and args.tls_grpc_insecure:
        parser.error("--tls-grpc-insecure (plain gRPC) and --tls-cert/--tls-key (TLS) contradict each other")
    if args.listen and args.tls_grpc_listener:
        both = f"--listen {args.listen!r} or --tls-grpc-listener {args.tls_grpc_listener!r}"
        parser.error(f"give the address once: {both}")
    if args.tls_grpc_listener and not (args.tls_grpc_insecure or args.tls_cert):
        parser.error("--tls-grpc-listener serves TLS: give --tls-cert and --tls-key, or --tls-grpc-insecure for plain")
    if args.tls_cert and not (args.listen or args.tls_grpc_listener):
        parser.error("--tls-cert/--tls-key need a TCP address: --listen HOST:PORT")
    args.listen = args.listen or args.tls_grpc_listener
    if args.labgrid:
        from jumpstarter.labgrid.coordinator import parse_url

        try:
            args.labgrid = parse_url(args.labgrid)
        except ValueError as exc:
            parser.error(f"--labgrid: {exc}")
        if not args.listen or args.listen.startswith("unix:"):
            parser.error("--labgrid publishes the exporter's TCP address: give --listen HOST:PORT too")
    if args.labgrid_place is not None and not args.labgrid:
        parser.error(f"--labgrid-place {args.labgrid_place}: give the coordinator too, --labgrid HOST:PORT")
    if args.labgrid_place is not None and not args.labgrid_place.strip():
        parser.error("--labgrid-place: give the place's name")
    if args.labgrid_place is not None:
        from jumpstarter.labgrid.board import place_name_problem

        problem = place_name_problem(args.labgrid_place)
        if problem:
            parser.error(f"--labgrid-place: {problem}")
    if args.listen and args.listen.isdigit():  # gRPC would try to resolve "7777" as a host name
        parser.error(f"--listen {args.listen}: give HOST:PORT, e.g. 127.0.0.1:{args.listen} (or 0.0.0.0:{args.listen})")


def is_config_name(config: str) -> bool:
    """Whether ``jumpstarter run CONFIG`` names a config of the exporters' folders rather than a file: no path
    separator, no YAML suffix, and no such file here."""
    return "/" not in config and not config.endswith((".yaml", ".yml")) and not os.path.exists(config)


def _named_config(parser: argparse.ArgumentParser, name: str) -> Path:
    """The file of exporter config ``name``, found as upstream's ``jmp run --exporter NAME`` finds it."""
    from jumpstarter.config.exporter import ExporterConfigV1Alpha1 as Named

    try:
        return Named.find(name)
    except ConfigError as exc:
        parser.error(f"{exc} (give a YAML file's path to run that file)")
