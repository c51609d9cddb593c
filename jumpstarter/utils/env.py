"""``env()``: the exporter of the surrounding shell, as scripts written for upstream reach it.

Upstream's ``jmp shell`` and our ``jumpstarter shell`` run a command with the exporter's address
in ``JUMPSTARTER_HOST`` (and its passphrase in ``JMP_GRPC_PASSPHRASE``); ``with env() as client:``
connects to it, so such a script runs unchanged with either client.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jumpstarter.client.base import DriverClient

# The variables upstream's `jmp shell` sets for its command (our `jumpstarter shell` sets the same).
HOOK_LEASE = "JUMPSTARTER_LEASE"  # set by an exporter for its hooks (jumpstarter.exporter.hooks)
JUMPSTARTER_HOST = "JUMPSTARTER_HOST"
JMP_GRPC_PASSPHRASE = "JMP_GRPC_PASSPHRASE"
JMP_GRPC_INSECURE = "JMP_GRPC_INSECURE"


def shell_tls(host: str) -> bool:
    """Whether the shell's exporter speaks TLS: a shell sets JMP_GRPC_INSECURE=1 for plain gRPC over TCP.

    TLS then trusts grpc's default roots: the system's, or GRPC_DEFAULT_SSL_ROOTS_FILE_PATH's.
    """
    from jumpstarter.common.wire import grpc_address  # which addresses are unix sockets: one place says

    return os.environ.get(JMP_GRPC_INSECURE) != "1" and not grpc_address(host).startswith("unix:")


# Where env() gets a client when no shell gives one: the pytest plugin's exporters (a lease per use).
_fallback: Callable[[], AbstractContextManager[DriverClient]] | None = None


def set_fallback(provider: Callable[[], AbstractContextManager[DriverClient]] | None) -> None:
    """Let env() lease from ``provider`` when $JUMPSTARTER_HOST is unset (the pytest plugin's exporters)."""
    global _fallback
    _fallback = provider


@contextmanager
def env() -> Iterator[DriverClient]:
    """The root client of the exporter at ``$JUMPSTARTER_HOST``; closed when the block ends.

    Under pytest with ``--exporter``, and no shell around, it is an exporter of the run, leased until the
    block ends: upstream-style tests (``jumpstarter_testing.JumpstarterTest``) share the suite's exporters.
    """
    # Imported here: the pytest plugin reads this module's names and must not load grpc until configured.
    from jumpstarter.client.tree import connect
    from jumpstarter.errors import EnvironmentVariableNotSetError

    host = os.environ.get(JUMPSTARTER_HOST, "").strip()
    if not host and _fallback is not None:
        with _fallback() as client:
            yield client
        return
    if not host:
        raise EnvironmentVariableNotSetError(
            f"{JUMPSTARTER_HOST} is not set: run this inside `jumpstarter shell ADDRESS -- ...` or upstream's "
            "`jmp shell`, or connect with jumpstarter.client.connect(address)"
        )
    passphrase = os.environ.get(JMP_GRPC_PASSPHRASE) or None
    with connect(host, passphrase=passphrase, tls=shell_tls(host)) as client:
        lease = os.environ.get(HOOK_LEASE, "")
        if lease:  # a hook of the exporter's config: its calls carry the hook's lease (the board is the hook's)
            client.connection.hold(lease)
        yield client
