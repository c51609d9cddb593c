"""What refused leases leave in an exporter (issue 27, "memory comes back"): nothing, however the client leaves.

The exporter runs as a subprocess whose RSS is watched, killed past a threshold. Each round costs the client
a new connection (~5 ms); the threshold per round is a quarter of what a leak cost (~31 KiB a round), and some
50 times what a round leaves without one, so that a loaded machine's noise doesn't fail it.
"""

from __future__ import annotations

import gc
import time

import pytest
from samples import EXAMPLES, rss

from jumpstarter.client import connect
from jumpstarter.client.lease import Busy, try_lease

KIB, MIB = 1024, 1024 * 1024
BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"
ROUNDS = 400
MOST_PER_ROUND = 8 * KIB
GUARD = 64 * MIB  # the exporter is killed past this growth: a leak would reach it in some 2000 rounds


def refused_on_a_new_connection(address: str) -> None:
    """A client that connects, is refused the lease, and closes its root client only: the connection, left
    unclosed, is dropped (``with connect(...)`` would close it)."""
    client = connect(address)
    assert isinstance(try_lease(client.connection, "refused"), Busy)
    client.close()


def test_a_client_refused_the_lease_on_a_dropped_connection_leaves_nothing(exporter_process):
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0")
    pid = exporter.process.pid
    with connect(exporter.address) as holder:
        lease = try_lease(holder.connection, "holder")
        assert not isinstance(lease, Busy)
        for _ in range(100):  # warm-up: the exporter's allocator and caches settle
            refused_on_a_new_connection(exporter.address)
        gc.collect()
        time.sleep(0.5)
        base = rss(pid)
        for n in range(ROUNDS):
            refused_on_a_new_connection(exporter.address)
            if n % 50 == 0 and rss(pid) - base > GUARD:
                exporter.kill()
                pytest.fail(f"the exporter grew by more than {GUARD // MIB} MiB in {n} rounds (killed)")
        gc.collect()  # dropped connections end their lease sessions when they are collected
        deadline, grown = time.monotonic() + 10, 0
        while time.monotonic() < deadline:  # what the exporter frees, it frees as the sessions end
            grown = rss(pid) - base
            if grown < ROUNDS * MOST_PER_ROUND:
                break
            time.sleep(0.2)
        assert grown < ROUNDS * MOST_PER_ROUND, f"the exporter kept {grown / ROUNDS / KIB:.1f} KiB a refused round"
        lease.release()
