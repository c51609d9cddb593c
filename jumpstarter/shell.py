"""``jumpstarter shell``: run a command connected to an exporter, as upstream's ``jmp shell`` does.

The command gets what upstream's shell gives it in direct mode, so that a script using
``jumpstarter.utils.env.env()`` works inside with our client or upstream's.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from jumpstarter.client.connection import TLS, Connection
from jumpstarter.common.wire import NAME_LABEL
from jumpstarter.utils.env import JMP_GRPC_INSECURE, JMP_GRPC_PASSPHRASE, JUMPSTARTER_HOST


def shell_environment(address: str, name: str, passphrase: str | None, tls: TLS) -> dict[str, str]:
    """The variables the command gets. JMP_DRIVERS_ALLOW=UNSAFE, as upstream's direct mode sets it, lets
    upstream's client load whichever client classes the exporter names; ours keeps its own allow list."""
    variables = {JUMPSTARTER_HOST: address, "JMP_DRIVERS_ALLOW": "UNSAFE", "JMP_EXPORTER": name}
    variables["JMP_LEASE"] = "direct"
    if not tls:
        variables[JMP_GRPC_INSECURE] = "1"  # plain gRPC; without it, clients speak TLS
    elif tls is not True:  # grpc's own variable: every grpc client inside, ours or upstream's, trusts this CA
        variables["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(Path(tls).resolve())
    if passphrase:
        variables[JMP_GRPC_PASSPHRASE] = passphrase
    return variables


def run_shell(address: str, command: list[str], *, passphrase: str | None = None, tls: TLS = False) -> int:
    """Check the exporter answers and takes the passphrase, then run ``command`` (default: the user's
    shell) with it in the environment; the command's exit code. JumpstarterError when the exporter can't be
    used, OSError when the command can't be run."""
    connection = Connection(address, passphrase, tls)
    try:
        connection.wait_ready()
        name = connection.report().labels.get(NAME_LABEL, "direct")
    finally:
        connection.close()
    command = command or [os.environ.get("SHELL", "/bin/sh")]
    return subprocess.call(command, env={**os.environ, **shell_environment(address, name, passphrase, tls)})
