"""``jumpstarter run CONFIG`` serves the drivers an ExporterConfig describes; ``jumpstarter shell``
runs a command connected to an exporter, as upstream's ``jmp shell`` does. One module per job:
``serve`` (run), ``tools`` (the client-side commands), ``parser`` (the grammar and its checks)."""

from __future__ import annotations

import logging
import sys

from jumpstarter.cli.parser import _check_run_args, _check_shell_args, _parser
from jumpstarter.cli.serve import default_socket, export_tree, run
from jumpstarter.cli.tools import health, inspect_exporter, lab, shell
from jumpstarter.common.secrets import RedactingFormatter
from jumpstarter.exporter.audit import HolderTag
from jumpstarter.installed import foreign_distribution

__all__ = ["default_socket", "export_tree", "main"]


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
