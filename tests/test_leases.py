"""Exclusive leases, as the exporter keeps them: one holder, others refused, a vanished holder freed."""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import grpc
import pytest
from jumpstarter_driver_demo import Board
from samples import EXAMPLES, leased

from jumpstarter.client import connect
from jumpstarter.client.lease import Busy, Lease, handovers, lease_records, try_lease, wait_for_handover
from jumpstarter.common.background import background_portal
from jumpstarter.driver import export
from jumpstarter.errors import ConnectError, LeaseError
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.lease import Leases
from jumpstarter.inprocess import serve
from jumpstarter.v1 import lease_pb2

BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"


@pytest.fixture
def second(board_client):
    """Another client of the same exporter: someone else in the lab."""
    with connect(board_client.connection.address, trusted=_trusted()) as client:
        yield client


def _trusted() -> frozenset[str]:
    return frozenset({"jumpstarter_driver_demo.client.BoardClient", "jumpstarter_driver_demo.client.PowerClient"})


def test_one_holder_at_a_time_and_others_are_told_who(board_client, second):
    lease = try_lease(board_client.connection, "alice@bench pid 1")
    assert isinstance(lease, Lease)
    assert board_client.echo("mine") == "mine"  # the holder's calls carry the lease
    busy = try_lease(second.connection, "bob")
    assert isinstance(busy, Busy) and busy.holder == "alice@bench pid 1"
    assert "leased by alice@bench pid 1 since" in str(busy)
    with pytest.raises(LeaseError, match=r"refused echo: exporter is leased by alice@bench pid 1 since"):
        second.echo("not yours")
    with pytest.raises(LeaseError, match="leased by alice"):
        second.power.on()
    assert second.connection.report().reports  # reading the report is open to everyone
    lease.release()
    assert second.echo("free again") == "free again"  # no lease held: direct mode, as upstream clients use
    with leased(second.connection, "bob") as taken:
        assert isinstance(taken, Lease)
        with pytest.raises(LeaseError, match="leased by bob"):
            board_client.echo("x")
    records = lease_records(board_client.connection)
    assert [(r.holder, r.ended) for r in records] == [("alice@bench pid 1", "released"), ("bob", "released")]
    assert all(r.released >= r.granted > 0 for r in records)


def test_the_held_lease_id_is_its_holders_secret(board_client):
    from jumpstarter.client.lease import lease_records

    with leased(board_client.connection, "alice") as lease:
        (held,) = [r for r in lease_records(board_client.connection) if not r.ended]
        assert held.holder == "alice" and held.lease_id != lease.lease_id  # others can't call through it
        board_client.connection.hold(held.lease_id)
        with pytest.raises(LeaseError, match="leased by alice"):
            board_client.echo("x")
        board_client.connection.hold(None)
        assert isinstance(lease, Lease)


def test_a_kept_lease_can_be_used_by_no_one_else_between_its_takes_or_during_them(board_client, second):
    """A kept lease's next take has the same id: GetLeases must not show it, ended or not. A raw second client
    reads every id GetLeases shows, and calls through each, between the holder's takes and during the next."""
    first = try_lease(board_client.connection, "gw0: test_a", keep=True)
    assert isinstance(first, Lease)
    assert len(bytes.fromhex(first.lease_id)) >= 16  # 128 random bits: not guessable

    def calls_through_what_getleases_shows() -> list[str]:
        shown = {r.lease_id for r in lease_records(second.connection)} - {""}
        assert shown  # the records name their leases, with something
        passed = []
        for lease_id in shown:
            second.connection.hold(lease_id)
            try:
                second.echo("mallory")
                passed.append(lease_id)
            except LeaseError:
                pass
        second.connection.hold(None)
        return passed

    assert calls_through_what_getleases_shows() == []  # during the first take
    first.release()  # kept
    assert calls_through_what_getleases_shows() == []  # between the takes
    again = try_lease(board_client.connection, "gw0: test_b", keep=True)
    assert isinstance(again, Lease) and again.lease_id == first.lease_id
    assert calls_through_what_getleases_shows() == []  # during the next take
    assert board_client.echo("mine") == "mine"  # the holder's own calls go through
    again.release()


def test_a_call_with_an_ended_lease_is_refused(board_client):
    lease = leased(board_client.connection, "me")
    stale = lease.lease_id
    lease.release()
    board_client.connection.hold(stale)
    with pytest.raises(LeaseError, match=f"lease {stale} has ended"):
        board_client.echo("x")
    board_client.connection.hold(None)


HOLDER = """
import sys, time
from jumpstarter.client import connect
from jumpstarter.client.lease import try_lease
client = connect(sys.argv[1], trusted=frozenset({"jumpstarter_driver_demo.client.BoardClient",
                                                 "jumpstarter_driver_demo.client.PowerClient"}))
lease = try_lease(client.connection, "doomed holder")
print("held" if lease.__class__.__name__ == "Lease" else "busy", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(
    ("listen", "fault"), [("unix", "killed"), ("tcp", "killed"), ("tcp", "frozen")], ids=lambda v: v
)
def test_a_killed_or_frozen_holder_loses_its_lease_within_seconds(exporter_process, tmp_path, listen, fault):
    """Frozen: stopped (SIGSTOP, as a suspended laptop), its TCP connection up: the exporter's pings go unanswered."""
    address = f"unix://{tmp_path / 'x.sock'}" if listen == "unix" else "127.0.0.1:0"
    running = exporter_process(BOARD_YAML, "--listen", address)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, running.address], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with connect(running.address, trusted=_trusted()) as client:
            assert isinstance(try_lease(client.connection, "waiting"), Busy)
            holder.send_signal(signal.SIGSTOP) if fault == "frozen" else holder.kill()
            killed = time.monotonic()
            while isinstance(lease := try_lease(client.connection, "next"), Busy):
                assert time.monotonic() - killed < 5, "the killed holder's lease was not freed within 5 s"
                time.sleep(0.05)
            lease.release()
            ended = [r.ended for r in lease_records(client.connection)]
            assert ended == ["holder vanished", "released"]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_every_rpc_but_the_few_open_ones_needs_the_lease():
    """Deny by default: walking the services the exporter serves, only the named open RPCs skip the lease, so
    an RPC added to the .proto files later is guarded without anyone remembering a list."""
    from jumpstarter.exporter.lease import OPEN, guarded
    from jumpstarter.v1 import jumpstarter_pb2, lease_pb2, paced_pb2, router_pb2

    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (jumpstarter_pb2, router_pb2, lease_pb2, paced_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert OPEN <= methods  # no stale name in the open list
    assert {m for m in methods if guarded(m)} == {
        "/jumpstarter.v1.ExporterService/DriverCall",
        "/jumpstarter.v1.ExporterService/StreamingDriverCall",
        "/jumpstarter.v1.ExporterService/Reset",
        "/jumpstarter.v1.RouterService/Stream",
        "/jumpstarter.hil.v1.PacedCallService/PacedStreamingDriverCall",
    }
    assert guarded("/jumpstarter.v1.ExporterService/FlashEverything")  # a new RPC


def test_folders_in_shared_places_must_be_ours_and_private(tmp_path, monkeypatch):
    import os

    from jumpstarter.cli import default_socket
    from jumpstarter.common.folders import private_folder

    made = private_folder(tmp_path / "new")
    assert made.is_dir() and (made.stat().st_mode & 0o777) == 0o700
    squatted = tmp_path / "squatted"
    squatted.mkdir()
    squatted.chmod(0o777)  # as another user would leave it for us
    with pytest.raises(PermissionError, match=r"squatted may be written by others \(mode 0777\)"):
        private_folder(squatted)
    (tmp_path / "link").symlink_to(made)
    with pytest.raises(PermissionError, match="is not a folder"):
        private_folder(tmp_path / "link")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / f"jumpstarter-{os.getuid()}").mkdir(mode=0o777)
    (tmp_path / f"jumpstarter-{os.getuid()}").chmod(0o777)
    with pytest.raises(SystemExit, match=r"may be written by others .* set XDG_RUNTIME_DIR"):
        default_socket(tmp_path / "board.yaml")


def test_lock_file_leases_are_shared_by_users_and_follow_no_symlink(tmp_path, monkeypatch):
    """The fallback for exporters without our lease service (upstream's): a lock file per exporter address, one for
    every user (tests/test_hardening_27.py has two users)."""
    import tempfile

    from jumpstarter.client.connection import Connection
    from jumpstarter.client.lease import _lock_file

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    connection = Connection("127.0.0.1:1")
    try:
        first = _lock_file(connection, "alice")
        assert isinstance(first, Lease)
        assert isinstance(busy := _lock_file(connection, "bob"), Busy) and busy.holder == "alice"
        first.release()
        (lock,) = tmp_path.iterdir()
        assert lock.name.startswith("jumpstarter-lease-") and (lock.stat().st_mode & 0o777) == 0o666
        lock.unlink()
        victim = tmp_path / "victim"
        victim.write_text("keep")
        lock.symlink_to(victim)
        with pytest.raises(LeaseError, match="is a symlink"):
            _lock_file(connection, "mallory's trap")
        assert victim.read_text() == "keep"
    finally:
        connection.close()


def test_a_lease_session_takes_and_releases_leases_one_after_another(board_client, second):
    """LeaseSession, what try_lease() uses: a take answered granted or busy, a release answered once it has
    ended; the session's lease ends with its call."""
    from jumpstarter.v1 import lease_pb2, lease_pb2_grpc

    stub = lease_pb2_grpc.LeaseServiceStub(board_client.connection.channel)
    outbox: queue.SimpleQueue = queue.SimpleQueue()
    call = stub.LeaseSession(iter(outbox.get, None))
    replies = iter(call)

    def ask(**action) -> lease_pb2.LeaseResponse:
        outbox.put(lease_pb2.LeaseSessionRequest(**action))
        return next(replies)

    first = ask(take=lease_pb2.LeaseRequest(holder="session one"))
    assert first.lease_id
    assert ask(take=lease_pb2.LeaseRequest(holder="again")).holder == "session one"  # one lease at a time
    assert isinstance(try_lease(second.connection, "other"), Busy)
    assert ask(release=lease_pb2.ReleaseRequest(lease_id=first.lease_id)) == lease_pb2.LeaseResponse()
    with leased(second.connection, "other"):  # released: free for others at once
        pass
    held = ask(take=lease_pb2.LeaseRequest(holder="session two")).lease_id
    assert held
    outbox.put(None)
    call.cancel()  # the session's call ends: its lease with it
    deadline = time.monotonic() + 5
    while isinstance(lease := try_lease(second.connection, "after"), Busy) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(lease, Lease)
    lease.release()
    ended = {r.holder: r.ended for r in lease_records(board_client.connection)}
    assert ended["session one"] == "released" and ended["session two"] == "holder vanished"


def _until_leased(connection, holder: str, timeout: float = 5.0) -> Lease:
    """Try as the plugin's pool does (every few ms) until the lease is ours."""
    deadline = time.monotonic() + timeout
    while isinstance(got := try_lease(connection, holder), Busy):
        assert time.monotonic() < deadline, f"still busy: {got}"
        time.sleep(0.005)
    return got


def test_a_kept_lease_is_taken_again_at_once_and_let_go_when_someone_else_waits(board_client, second):
    first = try_lease(board_client.connection, "gw0: test_a", keep=True)
    assert isinstance(first, Lease)
    first.release()  # returns at once: the exporter keeps it for the holder's next take
    with pytest.raises(LeaseError, match=r"leased by gw0: test_a"):  # others are refused meanwhile
        second.echo("between")
    again = try_lease(board_client.connection, "gw0: test_b", keep=True)
    assert isinstance(again, Lease) and again.lease_id == first.lease_id
    assert board_client.echo("still mine") == "still mine"
    again.release()
    busy = try_lease(second.connection, "bob")  # someone else wants it: the idle holder lets it go at once
    assert isinstance(busy, Busy) and busy.holder.startswith("gw0: test_")  # the exporter learns of test_b soon
    taken = _until_leased(second.connection, "bob")
    assert second.echo("mine now") == "mine now"
    taken.release()
    records = [(r.holder, r.ended) for r in lease_records(board_client.connection)]
    assert records == [("gw0: test_a", "released"), ("gw0: test_b", "released"), ("bob", "released")]


def test_a_kept_lease_in_use_is_let_go_when_released_if_someone_waits(board_client, second):
    held = try_lease(board_client.connection, "gw0: test_a", keep=True)
    assert isinstance(held, Lease)
    bobs: queue.SimpleQueue = queue.SimpleQueue()
    waiting = threading.Thread(target=lambda: bobs.put(_until_leased(second.connection, "bob")))
    waiting.start()  # bob waits, trying every few ms: the holder is told
    time.sleep(0.3)
    held.release()  # so this release is for good, and the exporter goes to bob first
    busy = try_lease(board_client.connection, "gw0: test_b", keep=True)
    assert isinstance(busy, Busy) and busy.holder in ("bob (handed over, taking it)", "bob")
    waiting.join()
    bobs.get().release()
    _until_leased(board_client.connection, "gw0: test_b", timeout=1).release()


def test_a_released_exporter_goes_first_to_who_waits_not_back_to_who_released_it(board_client, second):
    held = try_lease(board_client.connection, "alice")
    assert isinstance(held, Lease)
    assert isinstance(try_lease(second.connection, "bob"), Busy)
    held.release()
    busy = try_lease(board_client.connection, "alice again")
    assert isinstance(busy, Busy) and busy.holder == "bob (handed over, taking it)"
    _until_leased(second.connection, "bob").release()  # bob took it; no one waits now
    assert isinstance(try_lease(board_client.connection, "alice"), Lease)


def test_a_kept_lease_not_taken_again_within_a_second_is_let_go(board_client, second):
    """So that clients calling without a lease (upstream's) aren't refused while a run does other things."""
    kept = try_lease(board_client.connection, "gw0: test_a", keep=True)
    assert isinstance(kept, Lease)
    kept.release()
    with pytest.raises(LeaseError, match="leased by gw0: test_a"):
        second.echo("kept")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert second.echo("free") == "free"
            break
        except LeaseError:
            time.sleep(0.05)
    else:
        pytest.fail("the kept lease was never let go")
    assert time.monotonic() - (deadline - 5) >= 0.9  # kept for about a second first
    assert lease_records(board_client.connection)[-1].ended == "released"


async def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # blocks the event loop on purpose: nothing else on it runs meanwhile


def test_a_kept_lease_is_asked_for_again_once_a_call_found_the_exporter_gone(exporter_process):
    """A call can learn of the exporter's death before the lease session does: the next test must fail at its
    set-up, not start on a dead exporter. The session's loop is held so that it hears nothing meanwhile."""
    running = exporter_process(BOARD_YAML)
    with connect(running.address, trusted=_trusted()) as client:
        board = client.children["board"]
        lease = try_lease(client.connection, "gw0: test_1", keep=True)
        assert isinstance(lease, Lease)
        lease.release()  # kept for this connection's next take
        background_portal().start_task_soon(_hold_the_loop, 1.0)
        running.kill()
        with pytest.raises(ConnectError):
            board.echo("anyone there?")
        with pytest.raises(ConnectError):
            try_lease(client.connection, "gw0: test_2", keep=True)


def test_each_line_a_driver_logs_names_the_lease_holder_it_ran_under(exporter_process):
    """The exporter's log as an audit trail: a driver's line read on its own says whose test made the board
    do it; a line logged with no lease held names nobody."""
    running = exporter_process(BOARD_YAML)
    with connect(running.address, trusted=_trusted()) as client:
        power = client.children["board"].children["power"]
        with leased(client.connection, "alice@lab pid 7 gw0: tests/test_x.py::test_power") as lease:
            assert isinstance(lease, Lease)
            power.on()
        power.off()  # direct mode: nobody holds the exporter
    deadline = time.monotonic() + 30
    while "power off" not in (lines := running.output()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the exporter's output is read by a thread
    assert "power on [alice@lab pid 7 gw0: tests/test_x.py::test_power]\n" in lines, lines
    assert re.search(r"jumpstarter.drivers.Power: power off\n", lines), lines
    assert "taken by alice@lab pid 7 gw0: tests/test_x.py::test_power\n" in lines, lines  # not named twice


def test_a_waiting_session_keeps_its_turn_though_it_tries_again_only_now_and_then(board_client, second):
    """On a loaded machine a waiter's tries come far apart: a release still goes to it first."""
    held = try_lease(board_client.connection, "alice")
    assert isinstance(held, Lease)
    assert isinstance(try_lease(second.connection, "bob"), Busy)
    time.sleep(0.4)  # bob's next try is late
    held.release()
    busy = try_lease(board_client.connection, "alice again")
    assert isinstance(busy, Busy) and busy.holder == "bob (handed over, taking it)"
    _until_leased(second.connection, "bob").release()


class _Peer:
    """One LeaseSession on an exporter's Leases, driven by hand: what it sends, what it is answered, and the
    notices it gets (wanted, handed), kept apart."""

    def __init__(self, leases: Leases) -> None:
        self.requests: asyncio.Queue[lease_pb2.LeaseSessionRequest | None] = asyncio.Queue()
        self.answers: asyncio.Queue[lease_pb2.LeaseResponse] = asyncio.Queue()
        self.notices: list[str] = []
        self.task = asyncio.ensure_future(self._run(leases))

    async def _run(self, leases: Leases) -> None:
        async def requests() -> AsyncIterator[lease_pb2.LeaseSessionRequest]:
            while (request := await self.requests.get()) is not None:
                yield request

        async for answer in leases.LeaseSession(requests(), cast("ServicerContext", None)):
            if answer.handed or answer.wanted:
                self.notices.append("handed" if answer.handed else "wanted")
            else:
                self.answers.put_nowait(answer)

    def send(self, **request: Any) -> None:
        """Send a LeaseSessionRequest of these fields; none: end the session."""
        self.requests.put_nowait(lease_pb2.LeaseSessionRequest(**request) if request else None)

    async def answer(self) -> lease_pb2.LeaseResponse:
        return await asyncio.wait_for(self.answers.get(), timeout=5)

    async def noticed(self, *notices: str) -> bool:
        """Whether the notices got so far are (or soon become) ``notices``."""
        for _ in range(100):
            if self.notices == list(notices):
                return True
            await asyncio.sleep(0.001)
        return False

    async def take(self, holder: str, keep: bool = False) -> lease_pb2.LeaseResponse:
        self.send(take=lease_pb2.LeaseRequest(holder=holder, keep=keep))
        return await self.answer()

    async def release(self, lease_id: str) -> None:
        self.send(release=lease_pb2.ReleaseRequest(lease_id=lease_id))
        await self.answer()


def test_a_session_that_stops_waiting_or_ends_is_not_handed_the_exporter():
    async def scenario() -> None:
        leases = Leases()
        alice, bob, carol = _Peer(leases), _Peer(leases), _Peer(leases)
        held = await alice.take("alice")
        assert not (await bob.take("bob")).lease_id and not (await carol.take("carol")).lease_id
        bob.send(stop_waiting=lease_pb2.StopWaiting())
        await alice.release(held.lease_id)  # (bob's stop_waiting was handled: the exporter answered alice after)
        assert (await alice.take("alice again")).holder == "carol (handed over, taking it)"  # not bob's turn
        assert await carol.noticed("handed") and bob.notices == []  # carol is told at once
        carol.send()  # carol's session ends: she waits no more either
        await carol.task
        assert await alice.noticed("handed")  # handed on to alice, who waits now, not held for carol
        assert (await alice.take("alice again")).lease_id
        for peer in (alice, bob):
            peer.send()
            await peer.task

    asyncio.run(scenario())


def test_a_notice_that_comes_before_the_take_is_answered_is_not_lost(board_client, second, monkeypatch):
    """Someone may be refused between the exporter granting a kept lease and its holder reading the answer: the
    notice then reaches the holder first, and must still let the lease go once it is released."""
    from jumpstarter.client import lease as client_lease

    ask = client_lease._Session._ask

    def slow_reader(session, request):
        answer = ask(session, request)
        if request.HasField("take") and request.take.holder == "gw0: test_a":
            assert isinstance(try_lease(second.connection, "bob"), Busy)  # bob is refused: the holder is told
            deadline = time.monotonic() + 10  # and the notice is read before the holder reads its answer
            while not session._wanted and time.monotonic() < deadline:
                time.sleep(0.005)
        return answer

    monkeypatch.setattr(client_lease._Session, "_ask", slow_reader)
    held = try_lease(board_client.connection, "gw0: test_a", keep=True)
    assert isinstance(held, Lease)
    held.release()  # for good: bob waits
    busy = try_lease(board_client.connection, "gw0: test_b", keep=True)
    assert isinstance(busy, Busy) and busy.holder == "bob (handed over, taking it)"
    _until_leased(second.connection, "bob").release()


def test_a_session_that_takes_its_kept_lease_again_while_someone_waits_is_told_again():
    """A notice may cross a kept take: the exporter says it again rather than let the waiter starve."""

    async def scenario() -> None:
        leases = Leases()
        gw0, gw1 = _Peer(leases), _Peer(leases)
        held = await gw0.take("gw0: test_a", keep=True)
        assert held.keeps
        assert not (await gw1.take("gw1: test_b")).lease_id
        assert await gw0.noticed("wanted")
        gw0.send(release=lease_pb2.ReleaseRequest(lease_id=held.lease_id, keep=True))  # as if not told yet
        gw0.send(take=lease_pb2.LeaseRequest(holder="gw0: test_c", keep=True))  # (kept: granted unanswered)
        assert not (await gw1.take("gw1: test_b")).lease_id
        assert await gw0.noticed("wanted", "wanted")  # told again
        for peer in (gw0, gw1):
            peer.send()
            await peer.task

    asyncio.run(scenario())


def test_a_waiter_is_woken_as_soon_as_the_exporter_is_handed_to_it(board_client, second):
    held = try_lease(board_client.connection, "alice")
    assert isinstance(held, Lease)
    seen = handovers()
    assert isinstance(try_lease(second.connection, "bob"), Busy)
    assert not wait_for_handover(seen, 0.2)  # still held: bob sleeps the whole time
    threading.Timer(0.2, held.release).start()
    assert wait_for_handover(seen, 10)  # woken by the release (False: by the timeout)
    taken = try_lease(second.connection, "bob")  # handed to bob: his at once
    assert isinstance(taken, Lease)
    taken.release()


def _kept_pairs(lease_id: str, pairs: int) -> list[lease_pb2.LeaseSessionRequest]:
    """A kept lease's releases and takes, as a worker's tests make them."""
    requests = []
    for i in range(pairs):
        requests.append(lease_pb2.LeaseSessionRequest(release=lease_pb2.ReleaseRequest(lease_id=lease_id, keep=True)))
        requests.append(lease_pb2.LeaseSessionRequest(take=lease_pb2.LeaseRequest(holder=f"gw0: test_{i}", keep=True)))
    return requests


def test_a_lease_session_batch_too_big_is_refused_naming_the_limit(board_client, second):
    """A batch is handled in one go: one of 200,000 requests kept every other client waiting for seconds."""
    from jumpstarter.common.wire import MAX_LEASE_BATCH
    from jumpstarter.v1 import lease_pb2_grpc

    stub = lease_pb2_grpc.LeaseServiceStub(board_client.connection.channel)
    outbox: queue.SimpleQueue = queue.SimpleQueue()
    call = stub.LeaseSession(iter(outbox.get, None), timeout=30)
    replies = iter(call)
    outbox.put(lease_pb2.LeaseSessionRequest(take=lease_pb2.LeaseRequest(holder="flooder", keep=True)))
    held = next(replies)
    assert held.lease_id
    batch = lease_pb2.LeaseSessionBatch(requests=_kept_pairs(held.lease_id, MAX_LEASE_BATCH // 2 + 1))
    outbox.put(lease_pb2.LeaseSessionRequest(batch=batch))
    with pytest.raises(grpc.RpcError) as refused:
        next(replies)
    outbox.put(None)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"a LeaseSession batch of {MAX_LEASE_BATCH + 2} requests" in refused.value.details()
    assert f"more than the {MAX_LEASE_BATCH}" in refused.value.details()
    _until_leased(second.connection, "next").release()  # the flooder's lease ended with its session


def test_a_lease_session_batch_lets_others_run_between_its_requests():
    async def scenario() -> None:
        leases = Leases()
        gw0 = _Peer(leases)
        held = await gw0.take("gw0: test_a", keep=True)
        turns = 0

        async def other_clients() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        others = asyncio.ensure_future(other_clients())
        await asyncio.sleep(0)
        before = turns
        gw0.send(batch=lease_pb2.LeaseSessionBatch(requests=_kept_pairs(held.lease_id, 500)))
        gw0.send(release=lease_pb2.ReleaseRequest(lease_id=held.lease_id))  # answered after the batch
        await gw0.answer()
        assert turns - before >= 20, turns - before  # turns all through the batch, not one for all of it
        others.cancel()
        gw0.send()
        await gw0.task

    asyncio.run(scenario())


def test_a_flood_of_kept_leases_is_summed_up_in_the_log_not_logged_line_by_line(caplog):
    """100,000 release/take pairs wrote 200,000 log lines: past a budget, the lines are counted and summed up."""
    from jumpstarter.common.wire import MAX_LEASE_BATCH

    async def scenario() -> None:
        leases = Leases()
        gw0 = _Peer(leases)
        held = await gw0.take("gw0: test_a", keep=True)
        for _ in range(10):
            gw0.send(batch=lease_pb2.LeaseSessionBatch(requests=_kept_pairs(held.lease_id, MAX_LEASE_BATCH // 2)))
        gw0.send(release=lease_pb2.ReleaseRequest(lease_id=held.lease_id))
        await gw0.answer()
        gw0.send()
        await gw0.task

    caplog.set_level(logging.INFO, logger="jumpstarter.exporter")
    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "jumpstarter.exporter"]
    assert len(lines) < 1000, f"{len(lines)} lines for 5,000 leases"
    summaries = [line for line in lines if "lease lines of this session left out" in line]
    assert summaries and "gw0: test_" in summaries[-1]
    left_out = sum(int(line.split()[0]) for line in summaries)
    assert left_out + len(lines) - len(summaries) == 2 * 5_001  # every take and release: logged or counted


def _exporter_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith(("jumpstarter.exporter", "jumpstarter.drivers"))
    ]


def test_the_exporter_log_has_a_kept_leases_take_before_the_calls_it_covers(board_client, caplog, monkeypatch):
    """A kept lease's take was sent with the next batch, and a call goes on a stream of its own: the log had a
    test's calls before its lease line. A loaded machine here: the lease session's messages go late."""
    from jumpstarter.client import lease as client_lease

    write = client_lease._Session._write

    async def late_writes(self, call):
        class Late:
            async def write(self, request):
                await asyncio.sleep(0.2)
                await call.write(request)

            async def done_writing(self):
                await call.done_writing()

        await write(self, Late())

    monkeypatch.setattr(client_lease._Session, "_write", late_writes)
    caplog.set_level(logging.INFO)
    first = try_lease(board_client.connection, "gw0: test_power_on", keep=True)
    assert isinstance(first, Lease)
    board_client.power.on()
    first.release()  # kept
    again = try_lease(board_client.connection, "gw0: test_power_cycle", keep=True)
    assert isinstance(again, Lease) and again.lease_id == first.lease_id  # kept: granted at once
    board_client.power.off()
    again.release()
    lines = _exporter_lines(caplog)
    taken = [i for i, line in enumerate(lines) if "taken by gw0: test_power_cycle" in line]
    assert taken and lines.index("power off") > taken[0], lines


def test_a_sessions_normal_end_is_logged_as_a_release_though_the_exporter_reads_it_late(
    board_client, caplog, monkeypatch
):
    """Closing a session ended its call before the exporter had read its last takes and releases: a normal exit
    of a test run was logged as "holder vanished", and its last test's lease was lost from the records."""
    take = Leases._take

    async def slow_take(self, request, context, who):
        if request.holder == "gw0: test_b":
            await asyncio.sleep(0.2)  # a loaded exporter
        return await take(self, request, context, who)

    monkeypatch.setattr(Leases, "_take", slow_take)
    caplog.set_level(logging.INFO)
    with connect(board_client.connection.address, trusted=_trusted()) as worker:
        for test in ("gw0: test_a", "gw0: test_b"):
            lease = try_lease(worker.connection, test, keep=True)
            assert isinstance(lease, Lease)
            lease.release()
    records = [(r.holder, r.ended) for r in lease_records(board_client.connection)]
    assert records == [("gw0: test_a", "released"), ("gw0: test_b", "released")]
    assert not [line for line in _exporter_lines(caplog) if "vanished" in line]


def test_a_call_under_a_kept_take_not_sent_yet_has_the_exporter_ask_for_it(board_client, caplog, monkeypatch):
    """The exporter holds a call until it has read the call's take, and asks the session for it: the call doesn't
    wait for the session's next batch."""
    from jumpstarter.client import lease as client_lease

    monkeypatch.setattr(client_lease, "BATCH_DELAY", 60.0)  # no batch is sent during this test
    caplog.set_level(logging.INFO)
    first = try_lease(board_client.connection, "gw0: test_a", keep=True)
    assert isinstance(first, Lease)
    first.release()  # kept, not sent
    again = try_lease(board_client.connection, "gw0: test_b", keep=True)
    assert isinstance(again, Lease)
    assert board_client.echo("mine") == "mine"
    lines = _exporter_lines(caplog)
    assert any("taken by gw0: test_b" in line for line in lines), lines
    assert not [line for line in lines if "never came" in line]
    again.release()


class _SlowItems(Board):
    """The demo board with a sync generator whose second item takes ``seconds`` of the driver's code."""

    @export
    def slow_items(self, seconds: float) -> Iterator[int]:
        yield 0
        time.sleep(seconds)
        yield 1


def test_a_board_still_running_an_abandoned_generators_step_goes_to_no_one_until_it_returns(caplog):
    """A sync generator's thread can't be stopped inside a step: a client that stops reading (or gives up)
    while the driver is in one leaves the board busy until it returns, as a timed-out call does."""
    caplog.set_level(logging.INFO)
    with serve(_SlowItems(name="demo-1", baudrate=9600, children={})) as client:
        with connect(client.connection.address, trusted=_trusted()) as other:
            first = try_lease(client.connection, "gw0: test_a", keep=True)
            assert isinstance(first, Lease)
            items = client.streamingcall("slow_items", 8)
            assert next(items) == 0
            started = time.monotonic()
            items.close()  # the call ends while the driver is in its step (8 s)
            gave_up = "slow_items (called under the lease of gw0: test_a) goes on running after its caller gave up"
            while not any(gave_up in line for line in _exporter_lines(caplog)):  # the exporter hears of the end
                assert time.monotonic() - started < 4, _exporter_lines(caplog)
                time.sleep(0.01)
            first.release()  # kept
            while time.monotonic() - started < 5:  # the step surely still runs
                for connection, holder in ((client.connection, "gw0: test_b"), (other.connection, "gw1: test_c")):
                    got = try_lease(connection, holder, keep=True)
                    assert isinstance(got, Busy), f"{holder} got the board {time.monotonic() - started:.1f} s in"
                    assert "its call demo-1.slow_items" in got.holder or "slow_items" in got.holder, got
                time.sleep(0.1)
            lease = _until_leased(other.connection, "gw1: test_c", timeout=60)  # the step returns: free
            assert time.monotonic() - started >= 7  # (8 s, less the time the first item took to reach us)
            lease.release()
    assert any("slow_items returned" in line for line in _exporter_lines(caplog))


def test_a_board_still_running_a_timed_out_call_goes_to_no_one_until_the_call_returns(board_client, second):
    """A sync driver method runs on after its client's call timeout (a thread can't be stopped): the next test,
    on this worker or another, waits for the board, told why, instead of getting it busy."""
    from jumpstarter.errors import DriverTimeout

    first = try_lease(board_client.connection, "gw0: test_a", keep=True)
    assert isinstance(first, Lease)
    # The timeout leaves the call 2 s to reach the exporter and start there, on a loaded machine too: a call
    # that timed out before it started holds nothing.
    board_client.connection.call_timeout = 2.0
    started = time.monotonic()
    with pytest.raises(DriverTimeout, match="no answer within the call timeout of 2 s"):
        board_client.call("block", 8)
    board_client.connection.call_timeout = None
    first.release()  # kept

    def busy_with_the_call(connection, holder: str) -> bool:
        got = try_lease(connection, holder, keep=True)
        if isinstance(got, Lease):
            got.release()
            return time.monotonic() - started >= 8  # granted only once the call has returned
        assert "its call block, whose caller gave up" in got.holder and "still runs" in got.holder, got
        return True

    deadline = time.monotonic() + 3  # while the call surely still runs (it blocks 8 s; the timeout was at 2)
    while time.monotonic() - started < 5 and time.monotonic() < deadline:
        assert busy_with_the_call(board_client.connection, "gw0: test_b")  # the same worker: its next test
        assert busy_with_the_call(second.connection, "gw1: test_c")  # another worker
        time.sleep(0.1)
    lease = _until_leased(second.connection, "gw1: test_c", timeout=60)  # the call returns: the board is free
    assert time.monotonic() - started >= 8
    lease.release()
