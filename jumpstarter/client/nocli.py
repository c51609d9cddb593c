"""``j EXPORT`` for a driver whose client has no ``cli()``: a command that says so, instead of "No such command".

Upstream's composite leaves such a driver out of ``j``, so ``j --help`` lists nothing for it and ``j dut`` fails
as a typo would. Listed, it says what it is, how to use it from Python, and which methods its driver exports.
"""

from __future__ import annotations

from typing import Any

import click

from jumpstarter.client.exported import exported_methods
from jumpstarter.common.wire import CLIENT_LABEL


def no_cli_command(name: str, client: Any, installed: bool = True) -> click.Command:
    """A command named ``name`` whose help and whose run explain that ``client`` (a DriverClient) has no
    command-line interface; ``installed``: False for a client class not installed here (a stub)."""
    class_path = client.labels.get(CLIENT_LABEL, f"{type(client).__module__}.{type(client).__qualname__}")
    methods = ", ".join(exported_methods(client)) or "none named"
    if not installed:
        why = f"its client class {class_path} is not installed here"
    else:
        why = f"its client class {class_path} has no cli()"
    short = f"(no command-line interface: use it from Python; exports {methods})"
    message = (
        f"{name!r} has no command-line interface: {why}. Use it from Python (in this shell: "
        f"`from jumpstarter.utils.env import env`, then `with env() as client: client.children[{name!r}]"
        f".METHOD(...)`), or see it with `jumpstarter inspect`. Its driver exports: {methods}"
    )

    def explain(**_: Any) -> None:
        raise click.UsageError(message)

    return click.Command(
        name,
        callback=explain,
        help=message,
        short_help=short,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    )
