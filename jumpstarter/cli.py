"""``jumpstarter run CONFIG`` serves the drivers an ExporterConfig describes; ``jumpstarter shell``
runs a command connected to an exporter, as upstream's ``jmp shell`` does."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
from anyio import to_thread

from jumpstarter.config import ExporterConfig
from jumpstarter.driver.base import NAME_LABEL
from jumpstarter.errors import ConfigError, ConnectError, JumpstarterError
from jumpstarter.exporter.process import READY
from jumpstarter.exporter.server import serving

PASSPHRASE_ENV = "JUMPSTARTER_PASSPHRASE"


def default_socket(config_path: Path) -> Path:
    """Where ``run`` listens without --listen: a per-user runtime directory, named after the config."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    folder = Path(base) / f"jumpstarter-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder / f"{config_path.stem}.sock"


def _claim_socket(path: Path) -> None:
    """Remove a stale socket file; refuse if an exporter still answers there."""
    if not path.exists():
        return
    from jumpstarter.client.connection import Connection

    probe = Connection(f"unix://{path}")
    try:
        probe.wait_ready(0.3)
    except ConnectError:
        path.unlink(missing_ok=True)
        return
    probe.close()
    raise SystemExit(f"jumpstarter: an exporter already serves at unix://{path}; stop it or use --listen")


def exporter_labels(config: ExporterConfig) -> dict[str, str]:
    """The labels GetReport shows: metadata.labels, and the exporter's name (metadata.name or the file's stem)."""
    name = config.name or (Path(config.source).stem if config.source != "<string>" else "")
    return {NAME_LABEL: name, **config.labels} if name else dict(config.labels)


async def _run(config: ExporterConfig, address: str, passphrase: str | None) -> None:
    root = await to_thread.run_sync(config.instantiate)
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with serving(root, address, passphrase=passphrase, labels=exporter_labels(config)) as where:
                print(f"{READY} {config.source} at {where}", flush=True)
                async for signum in signals:
                    print(f"jumpstarter: {signal.Signals(signum).name}, stopping", file=sys.stderr, flush=True)
                    break
    finally:
        await to_thread.run_sync(root.close)


def run(args: argparse.Namespace) -> int:
    try:
        config = ExporterConfig.load(args.config)
    except ConfigError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 2
    for warning in config.warnings:
        print(f"jumpstarter: warning: {warning}", file=sys.stderr)
    if args.listen:
        address = args.listen
    else:
        socket = default_socket(Path(args.config))
        _claim_socket(socket)
        address = f"unix://{socket}"
    passphrase = args.passphrase or os.environ.get(PASSPHRASE_ENV) or None
    try:
        anyio.run(_run, config, address, passphrase)
    except ConfigError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 1
    return 0


def shell(args: argparse.Namespace) -> int:
    """Check the exporter answers (and takes the passphrase), then run the command with it in the environment."""
    from jumpstarter.client.connection import Connection
    from jumpstarter.utils.env import JMP_GRPC_INSECURE, JMP_GRPC_PASSPHRASE, JUMPSTARTER_HOST

    passphrase = args.passphrase or os.environ.get(PASSPHRASE_ENV) or None
    connection = Connection(args.address, passphrase)
    try:
        connection.wait_ready()
        name = connection.report().labels.get(NAME_LABEL, "direct")
    except (ConnectError, JumpstarterError) as exc:
        print(f"jumpstarter: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    command = args.cmd or [os.environ.get("SHELL", "/bin/sh")]
    # What upstream's `jmp shell` gives its command in direct mode, so that upstream's client works inside too
    # (UNSAFE: it loads whichever client classes the exporter names; ours keeps its own allow list).
    variables = {
        JUMPSTARTER_HOST: args.address,
        JMP_GRPC_INSECURE: "1",  # plain gRPC
        "JMP_DRIVERS_ALLOW": "UNSAFE",
        "JMP_EXPORTER": name,
        "JMP_LEASE": "direct",
    }
    if passphrase:
        variables[JMP_GRPC_PASSPHRASE] = passphrase
    try:
        return subprocess.call(command, env={**os.environ, **variables})
    except OSError as exc:
        print(f"jumpstarter: can't run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127


PLAIN_HELP = "with upstream's --tls-grpc* options: plain gRPC, the only kind this runtime speaks"


def _refuse_implied_tls(parser: argparse.ArgumentParser, address: str | None, insecure: bool, option: str) -> None:
    """Upstream reads ``option`` without --tls-grpc-insecure as TLS: never answer that with plain gRPC."""
    if address and not insecure:
        parser.error(
            f"{option} without --tls-grpc-insecure asks for TLS, which this runtime does not speak; add "
            "--tls-grpc-insecure for plain gRPC (on a trusted network, or through a tunnel)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jumpstarter", description="Hardware-in-the-loop test runtime.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="serve the drivers of an ExporterConfig YAML")
    run_parser.add_argument("config", nargs="?", help="ExporterConfig YAML file")
    run_parser.add_argument(
        "--listen",
        metavar="ADDRESS",
        help="HOST:PORT for TCP, or unix:///path; default: a unix socket in the user's runtime directory",
    )
    # Upstream's `jmp run --exporter-config FILE --tls-grpc-listener A --tls-grpc-insecure`, so a lab's
    # command line carries over.
    run_parser.add_argument("--exporter-config", metavar="FILE", help="the ExporterConfig, as upstream names it")
    run_parser.add_argument("--tls-grpc-listener", metavar="ADDRESS", help="--listen, as upstream names it")
    run_parser.add_argument("--tls-grpc-insecure", action="store_true", help=PLAIN_HELP)
    run_parser.add_argument("--tls-cert", help=argparse.SUPPRESS)
    run_parser.add_argument("--tls-key", help=argparse.SUPPRESS)
    run_parser.add_argument(
        "--passphrase", help=f"require this passphrase from clients (or set {PASSPHRASE_ENV}); default: none"
    )
    run_parser.add_argument("-v", "--verbose", action="store_true", help="log every driver error with its traceback")
    shell_parser = commands.add_parser(
        "shell", help="run a command (default: your shell) connected to an exporter, as upstream's `jmp shell`"
    )
    shell_parser.add_argument("address", nargs="?", help="HOST:PORT or unix:///path of a running exporter")
    shell_parser.add_argument("--tls-grpc", metavar="ADDRESS", help="the address, in upstream's spelling")
    shell_parser.add_argument("--tls-grpc-insecure", action="store_true", help=PLAIN_HELP)
    shell_parser.add_argument("--passphrase", help=f"the exporter's passphrase (or set {PASSPHRASE_ENV})")
    shell_parser.usage = "jumpstarter shell [-h] [ADDRESS | --tls-grpc ADDRESS] [--passphrase P] [-- COMMAND ...]"
    argv = sys.argv[1:] if argv is None else list(argv)
    command: list[str] = []
    if argv[:1] == ["shell"] and "--" in argv:  # what follows -- is the command, options and all
        argv, command = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)
    args.cmd = command
    if args.command == "shell":
        if args.address and args.tls_grpc:
            parser.error(f"give the address once: {args.address!r} or --tls-grpc {args.tls_grpc!r}")
        _refuse_implied_tls(parser, args.tls_grpc, args.tls_grpc_insecure, "--tls-grpc")
        args.address = args.address or args.tls_grpc
        if not args.address:
            parser.error("the exporter's address is required (jumpstarter shell HOST:PORT -- COMMAND)")
        return shell(args)
    if args.config and args.exporter_config:
        parser.error(f"give the config once: {args.config!r} or --exporter-config {args.exporter_config!r}")
    args.config = args.config or args.exporter_config
    if not args.config:
        parser.error("the ExporterConfig YAML file is required (jumpstarter run CONFIG)")
    if args.tls_cert or args.tls_key:
        parser.error("--tls-cert/--tls-key: this exporter serves plain gRPC only; tunnel the port for TLS")
    if args.listen and args.tls_grpc_listener:
        parser.error(
            f"give the address once: --listen {args.listen!r} or --tls-grpc-listener {args.tls_grpc_listener!r}"
        )
    _refuse_implied_tls(parser, args.tls_grpc_listener, args.tls_grpc_insecure, "--tls-grpc-listener")
    args.listen = args.listen or args.tls_grpc_listener
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("grpc").setLevel(logging.WARNING)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
