"""``jumpstarter run CONFIG``: serve the drivers an ExporterConfig describes, until stopped."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fcntl
import os
import signal
import socket
import sys
import threading
from contextlib import suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
from anyio import to_thread

from jumpstarter.common.folders import runtime_folder
from jumpstarter.common.wire import NAME_LABEL, grpc_address
from jumpstarter.config import BuildStopped, ExporterConfig
from jumpstarter.driver.base import close_drivers
from jumpstarter.errors import ConfigError, ConnectError
from jumpstarter.exporter.limits import (
    MIB,
    Limits,
)
from jumpstarter.exporter.process import READY
from jumpstarter.exporter.server import serving
from jumpstarter.exporter.stopnote import write_stop_note

if TYPE_CHECKING:
    from jumpstarter.exporter.holders import Holders

PASSPHRASE_ENV = "JUMPSTARTER_PASSPHRASE"


def default_socket(config_path: Path) -> Path:
    """Where ``run`` listens without --listen: a per-user runtime directory, named after the config."""
    try:
        folder = runtime_folder()
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
    place: str | None = None,
) -> tuple[int, bool]:
    """Serve until SIGINT or SIGTERM (or a failed hook whose onFailure is exit), then close every driver; how many
    failed to close, and whether a hook stopped it.

    A signal while the drivers are made (a slow one opening its hardware) lets the one being made finish, makes no
    other, and closes those made."""
    stop, stopped = threading.Event(), asyncio.Event()  # one for the thread that makes the drivers, one for the loop
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stopped.is_set() and holders is not None and holders.kill():  # a hook tidies the board: stop at once
            _say(f"jumpstarter: {name} again: the hook is killed, with its children")
            return
        _say(f"jumpstarter: {name}, stopping")
        stop.set()
        stopped.set()

    for signum in (signal.SIGINT, signal.SIGTERM):  # from now on: a signal no longer kills, it stops
        loop.add_signal_handler(signum, on_signal, signum)
    exited: list[str] = []

    def on_exit(why: str) -> None:  # a hook with onFailure exit failed
        _say(f"jumpstarter: {why}\njumpstarter: stopping: the hook's onFailure is exit")
        exited.append(why)
        if holders is not None and holders.exiting is not None:
            write_stop_note(holders.exiting)
        stopped.set()

    holders: Holders | None = None
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
                secure = tls is not None
                publisher = _publish(coordinator, labels, where, secure, config, place) if coordinator else None
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


def _publish(
    coordinator: str, labels: dict[str, str], where: str, tls: bool, config: ExporterConfig, place: str | None
) -> Any:
    """Announce the exporter to a labgrid coordinator (see jumpstarter/labgrid/publish.py), under its name, at a
    place of its name or ``place``."""
    from jumpstarter.labgrid.board import place_name_problem
    from jumpstarter.labgrid.preflight import PublishError
    from jumpstarter.labgrid.publish import Publisher

    host, _, port = where.rpartition(":")
    if host.strip("[]") in ("0.0.0.0", "::", ""):  # listening everywhere: others reach it by this host's name
        where = f"{socket.getfqdn()}:{port}"
    name = labels.get(NAME_LABEL) or "exporter"
    problem = place_name_problem(name) if place is None else None
    if problem:  # its place is named after it
        raise ConfigError(f"--labgrid: this exporter's name names its place, and {problem}; give --labgrid-place NAME")
    at = f" in place {place}" if place else ""
    _say(f"jumpstarter: publishing {name} ({where}){at} at the labgrid coordinator {coordinator}")
    try:
        return Publisher(coordinator, name, where, tls, list(config.export), dict(config.labels), place).start()
    except PublishError as exc:
        raise ConfigError(str(exc)) from None


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
        failed, hook_exit = anyio.run(_run, config, address, passphrase, tls, limits, args.labgrid, args.labgrid_place)
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
