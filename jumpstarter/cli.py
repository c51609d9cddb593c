"""``jumpstarter run CONFIG`` serves the drivers an ExporterConfig describes; ``jumpstarter shell``
runs a command connected to an exporter, as upstream's ``jmp shell`` does."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

import anyio
from anyio import to_thread

from jumpstarter.common.folders import private_folder
from jumpstarter.common.secrets import RedactingFormatter
from jumpstarter.common.wire import NAME_LABEL, grpc_address
from jumpstarter.config import BuildStopped, ExporterConfig
from jumpstarter.driver.base import close_drivers
from jumpstarter.errors import ConfigError, ConnectError, JumpstarterError
from jumpstarter.exporter.audit import HolderTag
from jumpstarter.exporter.limits import (
    MAX_MESSAGE_ENV,
    MAX_UPLOADS_ENV,
    MIB,
    MOST_MESSAGE_MIB,
    UPLOAD_MEMORY_ENV,
    Limits,
    too_big,
)
from jumpstarter.exporter.process import READY
from jumpstarter.exporter.server import serving
from jumpstarter.history import DEFAULT_DAYS
from jumpstarter.installed import foreign_distribution

PASSPHRASE_ENV = "JUMPSTARTER_PASSPHRASE"


def default_socket(config_path: Path) -> Path:
    """Where ``run`` listens without --listen: a per-user runtime directory, named after the config."""
    import tempfile  # here: with shutil and the compressors it costs every exporter's start-up ~4 ms

    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    try:
        folder = private_folder(Path(base) / f"jumpstarter-{os.getuid()}")
    except PermissionError as exc:
        raise SystemExit(f"jumpstarter: {exc}") from None
    return folder / f"{config_path.stem}.sock"


def _claim_socket(path: Path) -> IO[str]:
    """Take the unix socket at ``path`` for this process; the lock file that says so, to keep open while it serves.

    The lock file beside the socket (``NAME.sock.lock``) is locked (flock) for as long as its exporter lives: one
    that holds it keeps its socket however unresponsive it is (stopped with Ctrl-Z or SIGSTOP), and a second run
    is refused. A socket whose lock is free was left by an exporter that is gone, and is removed.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock = open(os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600), "r+")  # noqa: SIM115
    except OSError as exc:
        raise SystemExit(f"jumpstarter: can't open the lock file {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = lock.read().strip()
        lock.close()
        who = f" (pid {owner})" if owner.isdigit() else ""
        raise SystemExit(
            f"jumpstarter: an exporter{who} already serves at unix://{path}; stop it, or serve elsewhere with --listen"
        ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    if path.exists():
        from jumpstarter.client.connection import Connection

        probe = Connection(f"unix://{path}")  # one that takes no lock (an older version) may still answer
        try:
            probe.wait_ready(0.3)
        except ConnectError:
            path.unlink(missing_ok=True)
        else:
            probe.close()
            lock.close()
            raise SystemExit(f"jumpstarter: an exporter already serves at unix://{path}; stop it, or use --listen")
    return lock


def _unix_path(address: str) -> Path | None:
    """The socket file of a ``unix:`` address, or None for another kind."""
    target = grpc_address(address)
    if target.startswith("unix://"):
        return Path(target.removeprefix("unix://"))
    if target.startswith("unix:"):
        return Path(target.removeprefix("unix:"))
    return None


def exporter_labels(config: ExporterConfig) -> dict[str, str]:
    """The labels GetReport shows: metadata.labels, and the exporter's name (metadata.name or the file's stem)."""
    name = config.name or (Path(config.source).stem if config.source != "<string>" else "")
    return {NAME_LABEL: name, **config.labels} if name else dict(config.labels)


async def _run(
    config: ExporterConfig,
    address: str,
    passphrase: str | None,
    tls: tuple[bytes, bytes] | None,
    limits: Limits,
    coordinator: str | None = None,
) -> tuple[int, bool]:
    """Serve until SIGINT or SIGTERM (or a failed hook whose onFailure is exit), then close every driver; how many
    failed to close, and whether a hook stopped it.

    A signal while the drivers are made (a slow one opening its hardware) lets the one being made finish, makes no
    other, and closes those made."""
    stop, stopped = threading.Event(), asyncio.Event()  # one for the thread that makes the drivers, one for the loop
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        _say(f"jumpstarter: {signal.Signals(signum).name}, stopping")
        stop.set()
        stopped.set()

    for signum in (signal.SIGINT, signal.SIGTERM):  # from now on: a signal no longer kills, it stops
        loop.add_signal_handler(signum, on_signal, signum)
    exited: list[str] = []

    def on_exit(why: str) -> None:  # a hook with onFailure exit failed
        _say(f"jumpstarter: {why}\njumpstarter: stopping: the hook's onFailure is exit")
        exited.append(why)
        stopped.set()

    holders = None
    if config.hooks:
        from jumpstarter.exporter.holders import Holders

        holders = Holders(config.hooks, on_exit)
    try:
        try:
            root = await to_thread.run_sync(config.instantiate, stop)
        except BuildStopped:
            return 0, False  # those made are closed
        try:
            labels = exporter_labels(config)
            options: dict[str, Any] = {"passphrase": passphrase, "labels": labels, "tls": tls, "limits": limits}
            async with serving(root, address, holders=holders, **options) as where:
                print(export_tree(config), file=sys.stderr, flush=True)  # before READY: whoever waits for it has both
                publisher = _publish(coordinator, labels, where, tls is not None, config) if coordinator else None
                print(f"{READY} {config.source} at {where}", flush=True)
                try:
                    await stopped.wait()
                finally:
                    if publisher is not None:
                        await to_thread.run_sync(publisher.stop)
        finally:
            failures = await to_thread.run_sync(close_drivers, root)  # every driver, each failure logged
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return len(failures), bool(exited)


def _publish(coordinator: str, labels: dict[str, str], where: str, tls: bool, config: ExporterConfig) -> Any:
    """Announce the exporter to a labgrid coordinator (see jumpstarter/labgrid/publish.py), under its name."""
    from jumpstarter.labgrid.publish import Publisher

    host, _, port = where.rpartition(":")
    if host.strip("[]") in ("0.0.0.0", "::", ""):  # listening everywhere: others reach it by this host's name
        where = f"{socket.getfqdn()}:{port}"
    name = labels.get(NAME_LABEL) or "exporter"
    _say(f"jumpstarter: publishing {name} ({where}) at the labgrid coordinator {coordinator}")
    return Publisher(coordinator, name, where, tls, list(config.export), dict(config.labels)).start()


def export_tree(config: ExporterConfig) -> str:
    """The exports and their children, a line each with its driver class: what clients will find."""
    lines = ["jumpstarter: exports:"]

    def walk(entries: dict, depth: int) -> None:
        for name, entry in entries.items():
            if entry.target is not None:  # a ref: the same driver as at its target's path
                lines.append(f"{'  ' * depth}{name}: the driver at {entry.target.path} ({entry.target.type})")
                continue
            lines.append(f"{'  ' * depth}{name}: {entry.type}")
            walk(entry.children, depth + 1)

    walk(config.export, 1)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        config = ExporterConfig.load(args.config)
    except ConfigError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 2
    for warning in config.warnings:
        print(f"jumpstarter: warning: {warning}", file=sys.stderr)
    try:
        limits = _limits(args)
    except ValueError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 2
    address = args.listen or f"unix://{default_socket(Path(args.config))}"
    socket = _unix_path(address)
    lock = _claim_socket(socket) if socket is not None else None  # held until this process ends
    passphrase = args.passphrase or os.environ.get(PASSPHRASE_ENV) or None
    try:
        tls = _read_tls(args.tls_cert, args.tls_key)
    except OSError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 2
    if not address.startswith("unix:") and not (passphrase or tls):
        host = address.rpartition(":")[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"jumpstarter: warning: serving every driver at {address} to anyone who can reach it: "
                f"no --passphrase (or {PASSPHRASE_ENV}) and no TLS (--tls-cert/--tls-key)",
                file=sys.stderr,
            )
    if args.hold:
        held = _hold(config)
        if held is not None:
            return held
    if args.exit_with_stdin:
        _exit_with_stdin()
    try:
        failed, hook_exit = anyio.run(_run, config, address, passphrase, tls, limits, args.labgrid)
    except ConfigError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            lock.close()
    if failed:
        _say(f"jumpstarter: {failed} driver{'s' if failed > 1 else ''} failed to close (see above)")
        return 1
    return 1 if hook_exit else 0


def _limits(args: argparse.Namespace) -> Limits:
    """The exporter's limits: the options', else the environment's, else the defaults."""
    limits = Limits.from_env()
    given = {
        "max_message": args.max_message_size and args.max_message_size * MIB,
        "upload_memory": args.upload_memory and args.upload_memory * MIB,
        "max_uploads": args.max_uploads,
    }
    return dataclasses.replace(limits, **{name: value for name, value in given.items() if value})


def _say(line: str) -> None:
    """A line on stderr, if anyone still reads it: a parent that died took the pipe with it, and stopping
    cleanly (closing the drivers) matters more than saying so."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def _hold(config: ExporterConfig) -> int | None:
    """--hold: import the drivers' modules, then wait for a line on standard input before any driver is made. None
    to go on; the exit code if standard input ended first (not wanted after all) or Ctrl-C came: no driver was
    touched, and the line printed says so."""
    try:
        with suppress(ConfigError):  # making the drivers reports it
            config.check()  # imports every driver class
        if os.read(0, 4096):
            return None
        why = "standard input ended"
    except OSError as exc:
        why = f"standard input can't be read ({exc.strerror})"
    except KeyboardInterrupt:
        _say("jumpstarter: SIGINT while held (--hold): stopping; no driver was made")
        return 130
    _say(f"jumpstarter: {why} while held (--hold), before the line that lets it go: stopping; no driver was made")
    return 1


def _exit_with_stdin() -> None:
    """SIGTERM to this process once standard input ends: the parent holding its other end is gone."""

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass  # the parent writes nothing; whatever comes is ignored
        except OSError:
            pass
        _say("jumpstarter: standard input ended: the process that started this exporter is gone")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="jumpstarter stdin watch", daemon=True).start()


def _read_tls(cert: str | None, key: str | None) -> tuple[bytes, bytes] | None:
    """The certificate chain and private key (PEM) to serve TLS with, or None."""
    if not cert or not key:
        return None
    files = []
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise OSError(f"{option} {path}: {exc.strerror}") from None
        if b"-----BEGIN " not in data:
            raise OSError(f"{option} {path}: not a PEM file (no '-----BEGIN' line)")
        files.append(data)
    return files[0], files[1]


def shell(args: argparse.Namespace) -> int:
    from jumpstarter.shell import run_shell

    passphrase = args.passphrase or os.environ.get(PASSPHRASE_ENV) or None
    tls = args.tls_ca or bool(args.tls_grpc and not args.tls_grpc_insecure)
    try:
        return run_shell(args.address, args.cmd, passphrase=passphrase, tls=tls)
    except JumpstarterError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the command itself: exit as a shell does for a command it can't run
        print(f"jumpstarter: can't run {exc.filename!r}: {exc.strerror}", file=sys.stderr)
        return 127


def lab(args: argparse.Namespace) -> int:
    """List a labgrid lab's places, tags, holders and our exporters' state (jumpstarter/labgrid/listing.py)."""
    from jumpstarter.labgrid.coordinator import CoordinatorError, parse_url
    from jumpstarter.labgrid.listing import lines

    try:
        for line in lines(parse_url(args.url), args.passphrase or os.environ.get(PASSPHRASE_ENV) or None):
            print(line)
    except (ValueError, CoordinatorError) as exc:
        print(f"jumpstarter: lab {args.url}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    return 0


def inspect_exporter(args: argparse.Namespace) -> int:
    """Print what the exporter at ``args.address`` offers: its drivers, their methods and signatures."""
    from jumpstarter.client import connect
    from jumpstarter.inspection import describe

    passphrase = args.passphrase or os.environ.get(PASSPHRASE_ENV) or None
    try:
        with connect(args.address, passphrase=passphrase, tls=args.tls_ca or False) as root:
            print(describe(root, args.address, dict(root.connection.report().labels)))
    except JumpstarterError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 1
    return 0


def health(args: argparse.Namespace) -> int:
    """Print the per-board report of a history file; with --html, draw it too."""
    from jumpstarter.common.safefiles import write_atomic
    from jumpstarter.history import page
    from jumpstarter.history.health import analyse, report
    from jumpstarter.history.store import HistoryError

    try:
        found = analyse(Path(args.history), args.days or None)
    except HistoryError as exc:
        print(f"jumpstarter health: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report(found)))
    if args.html:
        try:
            write_atomic(Path(args.html), page.render(found).encode("utf-8"))
        except OSError as exc:
            print(f"jumpstarter health: can't write {args.html}: {exc}", file=sys.stderr)
            return 1
        print(f"jumpstarter health: drawn in {args.html}")
    return 0


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


def main(argv: list[str] | None = None) -> int:
    replaced = foreign_distribution()
    if replaced:
        print(f"jumpstarter: warning: {replaced}", file=sys.stderr)
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    command: list[str] = []
    if argv[:1] == ["shell"] and "--" in argv:  # what follows -- is the command, options and all
        argv, command = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)
    args.cmd = command
    if args.command == "shell":
        _check_shell_args(parser, args)
        return shell(args)
    if args.command == "inspect":
        return inspect_exporter(args)
    if args.command == "health":
        return health(args)
    if args.command == "lab":
        return lab(args)
    _check_run_args(parser, args)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s%(holder)s"))
    handler.addFilter(HolderTag())  # a driver's line names the lease holder it ran under
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    logging.getLogger("grpc").setLevel(logging.WARNING)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
