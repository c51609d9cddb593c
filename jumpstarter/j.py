"""``j``: upstream's command for driving an exporter from a shell, inside ``jumpstarter shell`` (or ``jmp shell``).

``jumpstarter shell ADDRESS -- j power on`` runs the ``on`` command of the ``power`` driver's client: each client
class that has a ``cli()`` (a click group, as upstream's drivers give) adds its commands under its name, the
root's group gathering its children's, as upstream's composite client does.
"""

from __future__ import annotations

import sys

from jumpstarter.errors import EnvironmentVariableNotSetError, JumpstarterError


def main(argv: list[str] | None = None) -> int:
    try:
        import click
    except ModuleNotFoundError:
        print("j: needs click, which upstream's drivers use: pip install click (see docs/install.md)", file=sys.stderr)
        return 2
    from jumpstarter.utils.env import env

    try:
        with env() as client:
            group = client.cli()
            try:
                result = group.main(args=sys.argv[1:] if argv is None else argv, prog_name="j", standalone_mode=False)
            except click.exceptions.Exit as done:
                return done.exit_code
            except click.ClickException as exc:
                exc.show()
                return exc.exit_code
            except click.exceptions.Abort:
                return 1
            if isinstance(result, int) and result:  # --help, or a command that returns its exit code
                return result
    except EnvironmentVariableNotSetError as exc:
        print(f"j: run it inside `jumpstarter shell ADDRESS -- j ...` (or jmp shell): {exc}", file=sys.stderr)
        return 2
    except JumpstarterError as exc:
        print(f"j: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
