"""``env()``: the exporter of the surrounding shell, as scripts written for upstream reach it.

Upstream's ``jmp shell`` and our ``jumpstarter shell`` run a command with the exporter's address
in ``JUMPSTARTER_HOST`` (and its passphrase in ``JMP_GRPC_PASSPHRASE``); ``with env() as client:``
connects to it, so such a script runs unchanged with either client.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jumpstarter.client.base import DriverClient

# The variables upstream's `jmp shell` sets for its command (our `jumpstarter shell` sets the same).
JUMPSTARTER_HOST = "JUMPSTARTER_HOST"
JMP_GRPC_PASSPHRASE = "JMP_GRPC_PASSPHRASE"
JMP_GRPC_INSECURE = "JMP_GRPC_INSECURE"


def tls_refusal(host: str) -> str | None:
    """Why the shell's exporter can't be reached with plain gRPC, or None when it can.

    Upstream's `jmp shell` sets JMP_GRPC_INSECURE=1 for plain gRPC; without it, a TCP exporter speaks TLS.
    """
    if os.environ.get(JMP_GRPC_INSECURE) == "1" or host.startswith(("unix:", "/", "./")):
        return None
    return (
        f"the shell's exporter at {host} speaks TLS ({JMP_GRPC_INSECURE} is not 1), and this runtime speaks "
        "plain gRPC only: start the shell with --tls-grpc-insecure"
    )


@contextmanager
def env() -> Iterator[DriverClient]:
    """The root client of the exporter at ``$JUMPSTARTER_HOST``; closed when the block ends."""
    # Imported here: the pytest plugin reads this module's names and must not load grpc until configured.
    from jumpstarter.client.tree import connect
    from jumpstarter.errors import ConnectError, EnvironmentVariableNotSetError

    host = os.environ.get(JUMPSTARTER_HOST, "").strip()
    if not host:
        raise EnvironmentVariableNotSetError(
            f"{JUMPSTARTER_HOST} is not set: run this inside `jumpstarter shell ADDRESS -- ...` or upstream's "
            "`jmp shell`, or connect with jumpstarter.client.connect(address)"
        )
    refusal = tls_refusal(host)
    if refusal:
        raise ConnectError(refusal)
    with connect(host, passphrase=os.environ.get(JMP_GRPC_PASSPHRASE) or None) as client:
        yield client
