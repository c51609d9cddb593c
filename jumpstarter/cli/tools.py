"""The client-side commands: ``shell`` (as upstream's ``jmp shell``), ``lab``, ``inspect`` and ``health``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jumpstarter.cli.serve import PASSPHRASE_ENV
from jumpstarter.errors import JumpstarterError


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
