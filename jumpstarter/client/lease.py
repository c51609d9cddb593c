"""Taking an exporter's exclusive lease from the client side.

``try_lease(connection, holder)`` returns a held ``Lease`` or ``Busy`` (who
holds it, since when) at once; waiting is the caller's policy. A waiter may
sleep in ``wait_for_handover`` between its tries, which wakes it as soon as an
exporter that refused it is handed to it, and says ``stop_waiting(connection)``
when it stops trying. While held, every call on the connection carries the
lease id. An exporter without ``LeaseService`` (upstream's) gets a lock file in
the temp directory instead: that keeps the runs of one machine apart, though
not those of two machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass
from typing import IO, Any

import grpc

from jumpstarter.client.connection import Connection
from jumpstarter.common.background import background_portal
from jumpstarter.common.folders import shared_lock_file
from jumpstarter.common.wire import MAX_HOLDER, MAX_LEASE_BATCH, TAKE_MARK, when
from jumpstarter.errors import ConnectError, LeaseError, error_from_rpc
from jumpstarter.v1 import lease_pb2, lease_pb2_grpc


@dataclass(frozen=True)
class Busy:
    """The exporter is leased by ``holder`` since ``since`` (seconds since the epoch)."""

    holder: str
    since: float

    def __str__(self) -> str:
        return f"leased by {self.holder} since {when(self.since)}"


class HookFailed(LeaseError):
    """The exporter's beforeLease hook, run for this take, failed, and its config's onFailure is endLease or exit
    (the exporter stops): no lease. ``run``: the hook's run (jumpstarter.v1.lease_pb2.HookRun), its output."""

    def __init__(self, run: lease_pb2.HookRun) -> None:
        self.run = run
        stops = "; the exporter stops" if run.on_failure == "exit" else ""
        super().__init__(
            f"its {run.hook} hook failed: {run.failure} (onFailure: {run.on_failure}{stops}); its output:\n"
            + (run.output.rstrip()[-8000:] or "(none)")
        )


class Lease:
    """A lease held on ``connection``; ``release()`` gives it back (idempotent). ``hooks``: the exporter's hooks
    this take waited for (jumpstarter.v1.lease_pb2.HookRun: which, how long, their output)."""

    hooks: tuple[lease_pb2.HookRun, ...] = ()

    def __init__(
        self, connection: Connection, lease_id: str, session: _Session | None = None, lock: IO[str] | None = None
    ) -> None:
        """``session``: the connection's LeaseSession call it was taken on (released there); ``lock``: the
        locked file that stands for a lease where the exporter keeps none."""
        self.connection, self.lease_id = connection, lease_id
        self._session, self._lock = session, lock
        self.held = True
        # The calls carry the id, and which take of it this is: a kept lease's takes share its id, and the exporter
        # runs a call only once it has read the take the call is made under.
        connection.hold(f"{lease_id}{TAKE_MARK}{session.takes}" if session is not None else None)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self.connection.hold(None)
        if self._lock is not None:
            self._lock.close()  # closing the file drops its flock
        if self._session is not None:
            self._session.release(self.lease_id)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_lease(connection: Connection, holder: str, *, keep: bool = False) -> Lease | Busy:
    """Take the exporter's lease if it is free; never waits for another holder (nor for its hooks: Busy while one
    runs; HookFailed when this take's beforeLease hook failed). A holder name longer than an
    exporter keeps is shortened in its middle (a test id's end says most).

    ``keep``: releasing it keeps the exporter for the connection's next lease of ``keep=True``, until someone else
    wants it: a run of leases by one holder (a test run's worker) costs no waiting for the exporter's answers.
    Keep ``keep`` off where a released exporter must be free at once (for calls without a lease, say).

    ``Busy`` makes the connection a waiter: when the exporter is released, it is handed to its longest waiter
    first, for up to a second. Call ``stop_waiting(connection)`` when you won't try again soon."""
    if len(holder) > MAX_HOLDER:
        half = (MAX_HOLDER - 3) // 2
        holder = f"{holder[:half]}...{holder[-half:]}"
    if connection in _without_leases:
        return _lock_file(connection, holder)
    try:
        session = _session(connection)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            _without_leases.add(connection)
            return _lock_file(connection, holder)  # an exporter without our leases: upstream's
        raise error_from_rpc(err, address=connection.address, method="lease") from None
    try:
        answer = session.take(holder, keep, connection.broken)
    except (grpc.RpcError, ConnectError) as err:
        _sessions.pop(connection, None)  # broken: the next lease opens another
        session.close()
        if isinstance(err, ConnectError):
            raise
        exc = error_from_rpc(err, address=connection.address, method="lease")
        if not isinstance(exc, ConnectError):  # the open session broke: the exporter went away or is going
            exc = ConnectError(f"exporter at {connection.address}: its lease session ended: {err.details()}")
        raise exc from None
    if not answer.lease_id:
        failed = [run for run in answer.hooks if run.failure and run.on_failure != "warn"]
        if failed:
            raise HookFailed(failed[-1])
        return Busy(answer.holder, answer.since)
    lease = Lease(connection, answer.lease_id, session=session)
    lease.hooks = tuple(answer.hooks)
    return lease


# How long a kept lease's take or release may wait to be sent, in a batch with the next ones: the exporter's view
# of which test holds it lags this much (a call under a take not sent yet has the exporter ask for it at once).
BATCH_DELAY = 0.02
PROBE_TIMEOUT = 10.0  # seconds for an exporter to say whether it keeps leases (a frozen one fails sooner: pings)
# How long a kept lease not in use stays kept: a worker that goes on to tests that don't need the exporter lets
# it go after this, for clients that call without a lease (upstream's), which a kept lease refuses.
KEEP_IDLE = 1.0
CLOSE_TIMEOUT = 3.0  # seconds a closing session waits for the exporter to read its last takes and releases


class _Session:
    """A connection's LeaseSession call: its leases, one after another, two messages each on a call that stays
    open (a new call and a Release call for each, otherwise). One caller at a time; ends with the connection.

    Kept leases (``try_lease(keep=True)``, a test run's per-test leases): a release keeps the exporter for this
    session's next take, granted then with the same id, so neither waits for an answer, and neither is sent at
    once: a task sends them in batches every BATCH_DELAY, saying when each happened (waking a thread for each
    message costs a test more than everything else its lease does). A call carries which take it is made under;
    the exporter holds one whose take it hasn't read, and asks for what is held back (a ``hurry`` notice), so
    that its log has each take before the calls it covers. When the exporter says someone else waits
    (a ``wanted`` notice), the kept lease is let go at once if no lease is in use, else when the one in use is
    released.

    The call runs on the process's background event loop.
    """

    def __init__(self, connection: Connection) -> None:
        self._answers: queue.SimpleQueue[lease_pb2.LeaseResponse | BaseException | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # one asker at a time
        self._state = threading.Lock()  # what follows, shared with the tasks
        self._sent = 0  # requests sent so far that the exporter answers: the next one's index (answers come in order)
        self._awaited = -1  # the index of the request whose answer someone waits for
        self._unsent: list[lease_pb2.LeaseSessionRequest] = []  # a kept lease's takes and releases, not sent yet
        self._kept: str | None = None  # the id of a kept lease (in use or not)
        self.takes = 0  # how many times the current lease was taken: 1, and one more for each kept take
        self._in_use = False
        self._wanted = False  # someone else waits: let the kept lease go when it is released
        self._broken = 0  # the connection's count of broken calls when the kept lease was granted by the exporter
        self._batching = False  # the task sending the unsent runs
        self._outbox: asyncio.Queue[lease_pb2.LeaseSessionRequest | None] = asyncio.Queue()
        # Whether the exporter has a LeaseService at all, asked with a Release of no lease (which does nothing):
        # a stream's first message can cross the exporter's refusal, and grpc.aio then reports "Internal error
        # from Core" instead of UNIMPLEMENTED.
        probe = lease_pb2_grpc.LeaseServiceStub(connection.channel)
        probe.Release(lease_pb2.ReleaseRequest(), metadata=connection.metadata, timeout=PROBE_TIMEOUT)
        self._loop, self._call = background_portal().call(self._open, connection)
        connection.on_close.append(self.close)
        # A connection dropped unclosed (a root client's close() leaves it open) ends its session too: else the
        # call, kept by its tasks here, stayed open on the channel others to that address share, and the
        # exporter held it (its handler, its tasks, ~30 KiB) until this process exits.
        self._abandoned = weakref.finalize(connection, self._abandon)
        self._abandoned.atexit = False

    # On the background loop --------------------------------------------------------------------------------

    async def _open(self, connection: Connection) -> tuple[asyncio.AbstractEventLoop, Any]:
        call = connection._aio_stubs().lease.LeaseSession(metadata=connection.metadata)
        loop = asyncio.get_running_loop()
        # (held, as every task here: asyncio keeps only weak references to running tasks)
        self._writer = loop.create_task(self._write(call))
        self._reader = loop.create_task(self._read(call))
        return loop, call

    async def _write(self, call: Any) -> None:
        try:
            while (request := await self._outbox.get()) is not None:
                await call.write(request)
            await call.done_writing()
        except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the call is over: _read tells the askers

    async def _read(self, call: Any) -> None:
        """Route what the exporter sends: the awaited answer to its asker, notices to the kept lease."""
        index = 0
        end: BaseException | None = None
        try:
            async for reply in call:
                if reply.hurry:  # a call waits for a take we hold back
                    with self._state:
                        unsent, self._unsent = self._unsent, []
                    self._queue(_batches(unsent))  # type: ignore[arg-type]
                    continue
                if reply.handed:
                    _count_handover()
                    continue
                if reply.wanted:
                    self._let_go()
                    continue
                with self._state:
                    awaited = index == self._awaited
                index += 1
                if awaited:
                    self._answers.put(reply)
        except grpc.RpcError as err:
            end = err
        except asyncio.CancelledError:
            pass
        with self._state:
            self._kept = None  # the exporter ended it (or went away): the next take asks, and learns why
        self._answers.put(end)  # the session is over: for the asker waiting now, and for every later one

    async def _send_batches(self) -> None:
        """Send the unsent every BATCH_DELAY, until there has been nothing to send for KEEP_IDLE seconds: then a
        kept lease not in use is let go too."""
        idle = 0
        while True:
            await asyncio.sleep(BATCH_DELAY)
            with self._state:
                unsent, self._unsent = self._unsent, []
                idle = 0 if unsent else idle + 1
                if idle * BATCH_DELAY >= KEEP_IDLE:
                    if self._kept is not None and not self._in_use:
                        self._let_go_now()
                    self._batching = False  # the next _later() starts another
                    return
            for batch in _batches(unsent):
                self._outbox.put_nowait(batch)

    def _start_batches(self) -> None:
        self._batches = self._loop.create_task(self._send_batches())

    def _queue(self, requests: list[lease_pb2.LeaseSessionRequest | None]) -> None:
        for request in requests:
            self._outbox.put_nowait(request)

    # From any thread ---------------------------------------------------------------------------------------

    def _send(self, request: lease_pb2.LeaseSessionRequest, *, awaited: bool = False) -> None:
        """Send ``request`` now, after the unsent (its caller holds ``_state``); ``awaited``: its answer goes to
        the caller."""
        if awaited:
            self._awaited = self._sent
        self._sent += 1
        requests, self._unsent = [*_batches(self._unsent), request], []
        self._loop.call_soon_threadsafe(self._queue, requests)

    def _later(self, request: lease_pb2.LeaseSessionRequest) -> None:
        """Send ``request``, which the exporter doesn't answer, with the next batch (its caller holds ``_state``)."""
        self._unsent.append(request)
        if not self._batching:
            self._batching = True
            self._loop.call_soon_threadsafe(self._start_batches)

    def _ask(self, request: lease_pb2.LeaseSessionRequest) -> lease_pb2.LeaseResponse:
        with self._lock:
            with self._state:
                self._send(request, awaited=True)
            answer = self._answers.get()
            if isinstance(answer, lease_pb2.LeaseResponse):
                return answer
            self._answers.put(answer)
            if answer is None:
                raise ConnectError("the exporter ended the lease session")
            raise answer

    def take(self, holder: str, keep: bool = False, broken: int = 0) -> lease_pb2.LeaseResponse:
        """``broken``: the connection's count of broken calls (see ``Connection.broken``)."""
        with self._state:
            if self._kept is not None and not self._in_use:
                # Kept for us: granted, with the same id; unless a call broke since (the exporter may have died,
                # and the session not heard yet): then asked, so that a test doesn't start on a dead exporter.
                if keep and self._broken == broken:
                    self._in_use = True
                    self.takes += 1
                    self._later(
                        lease_pb2.LeaseSessionRequest(
                            take=lease_pb2.LeaseRequest(holder=holder, keep=True, at=time.time())
                        )
                    )
                    return lease_pb2.LeaseResponse(lease_id=self._kept)
                self._let_go_now()
            # A notice from here on may be about the lease this take gets, and may come before its answer is read.
            self._wanted = False
        answer = self._ask(lease_pb2.LeaseSessionRequest(take=lease_pb2.LeaseRequest(holder=holder, keep=keep)))
        self.takes = 1
        if answer.lease_id and keep and answer.keeps:
            with self._state:
                self._kept, self._in_use, self._broken = answer.lease_id, True, broken
        return answer

    def release(self, lease_id: str) -> None:
        """End the lease: a kept one is kept for the next take unless someone else waits; any other returns once
        the exporter has ended it (or can't be reached: then it is over too)."""
        with self._state:
            if lease_id == self._kept and self._in_use:
                self._in_use = False
                if not self._wanted:
                    keep = lease_pb2.ReleaseRequest(lease_id=lease_id, keep=True, at=time.time())
                    self._later(lease_pb2.LeaseSessionRequest(release=keep))
                    return
                self._kept = None
        try:
            self._ask(lease_pb2.LeaseSessionRequest(release=lease_pb2.ReleaseRequest(lease_id=lease_id)))
        except (grpc.RpcError, ConnectError):
            pass

    def stop_waiting(self) -> None:
        """Say, with the next batch, that this session no longer waits for the exporter."""
        with self._state:
            try:
                self._later(lease_pb2.LeaseSessionRequest(stop_waiting=lease_pb2.StopWaiting()))
            except RuntimeError:
                pass  # the loop has ended: so has the session, which the exporter counts as no longer waiting

    def _let_go(self) -> None:
        """Someone else waits: let the kept lease go now if it isn't in use, else when it is released."""
        with self._state:
            if self._kept is not None and not self._in_use:
                self._let_go_now()
            else:  # in use, or being granted (its answer not read yet): let it go when released
                self._wanted = True

    def _let_go_now(self) -> None:
        """Release the kept lease, not in use (its caller holds ``_state``)."""
        assert self._kept is not None
        lease_id, self._kept = self._kept, None
        self._send(lease_pb2.LeaseSessionRequest(release=lease_pb2.ReleaseRequest(lease_id=lease_id)))

    def close(self) -> None:
        """End the session: what is unsent goes first, and a kept lease is released (its record says so)."""
        self._abandoned.detach()
        requests = self._last_requests()
        try:
            self._loop.call_soon_threadsafe(self._queue, requests)
            asyncio.run_coroutine_threadsafe(self._end(), self._loop).result(timeout=CLOSE_TIMEOUT + 1)
        except (RuntimeError, TimeoutError):
            pass  # the loop has ended (the process exits), or the exporter doesn't answer: the call is over anyway

    def _last_requests(self) -> list[lease_pb2.LeaseSessionRequest | None]:
        """What is left to send, a kept lease not in use released, and the end of the requests (None)."""
        with self._state:
            if self._kept is not None and not self._in_use:
                self._let_go_now()
            requests, self._unsent = [*_batches(self._unsent), None], []
        return requests

    def _abandon(self) -> None:
        """The connection was dropped unclosed: end the session as close() does, without waiting. (Run by the
        garbage collector, on whatever thread it ran, maybe one holding ``_state``: it only asks the loop.)"""
        with contextlib.suppress(RuntimeError):  # the loop has ended: the process exits
            self._loop.call_soon_threadsafe(self._end_abandoned)

    def _end_abandoned(self) -> None:
        self._queue(self._last_requests())
        self._ending = self._loop.create_task(self._end())  # (held: asyncio keeps running tasks weakly)

    async def _end(self) -> None:
        """Wait for the exporter to end the call, once it has read everything (cancelling it first would drop what
        it hasn't read yet: the log would have the holder vanish)."""
        await asyncio.wait([self._reader], timeout=CLOSE_TIMEOUT)
        self._call.cancel()


def _batches(requests: list[lease_pb2.LeaseSessionRequest]) -> list[lease_pb2.LeaseSessionRequest]:
    """Messages of ``requests``, as few as the exporter takes (MAX_LEASE_BATCH a message; more only if the loop
    stalled): it handles them in order. A message sent costs its sender a thread's wake-up or two; a test run's
    worker may take and release hundreds of kept leases a second."""
    return [
        lease_pb2.LeaseSessionRequest(
            batch=lease_pb2.LeaseSessionBatch(requests=requests[start : start + MAX_LEASE_BATCH])
        )
        for start in range(0, len(requests), MAX_LEASE_BATCH)
    ]


_sessions: weakref.WeakKeyDictionary[Connection, _Session] = weakref.WeakKeyDictionary()
_without_leases: weakref.WeakSet[Connection] = weakref.WeakSet()  # their exporters have no LeaseService
_sessions_lock = threading.Lock()


def _session(connection: Connection) -> _Session:
    """The connection's lease session, opened on first use."""
    with _sessions_lock:
        session = _sessions.get(connection)
        if session is None:
            session = _sessions[connection] = _Session(connection)
        return session


def lease_records(connection: Connection) -> list[lease_pb2.LeaseRecord]:
    """The exporter's record of its leases, oldest first (the one held now has ``released == 0``)."""
    stub = lease_pb2_grpc.LeaseServiceStub(connection.channel)
    try:
        return list(stub.GetLeases(lease_pb2.GetLeasesRequest(), metadata=connection.metadata).leases)
    except grpc.RpcError as err:
        raise error_from_rpc(err, address=connection.address, method="GetLeases") from None


_handovers = threading.Condition()
_handover_count = 0  # exporters handed to this process's waiting connections so far


def _count_handover() -> None:
    global _handover_count
    with _handovers:
        _handover_count += 1
        _handovers.notify_all()


def handovers() -> int:
    """How many times so far an exporter was handed to one of this process's waiting connections: read it before
    trying, then pass it to ``wait_for_handover``, and no hand-over in between is missed."""
    return _handover_count


def wait_for_handover(seen: int, timeout: float) -> bool:
    """Sleep up to ``timeout`` seconds, less if an exporter is (or was, since ``handovers()`` was ``seen``)
    handed to one of this process's waiting connections. True if one was.

    An exporter of ours, once released, is handed for a moment to the connection that waited longest, and tells
    it. Exporters without leases of their own (upstream's) tell nobody: keep trying now and then."""
    with _handovers:
        return _handovers.wait_for(lambda: _handover_count != seen, timeout)


def stop_waiting(connection: Connection) -> None:
    """Tell the exporter this connection no longer waits for it (it took another, or gave up), so that a release
    doesn't hold the exporter free for it. Returns at once; does nothing where the connection never asked."""
    session = _sessions.get(connection)
    if session is not None:
        session.stop_waiting()


def _lock_file(connection: Connection, holder: str) -> Lease | Busy:
    # One file for every user of this machine, none of whom can make us write a file of their choosing (folders.py).
    name = f"jumpstarter-lease-{hashlib.sha256(connection.target.encode()).hexdigest()[:16]}.lock"
    try:
        file, path = shared_lock_file(name)  # held open for the lease's lifetime
    except OSError as exc:
        raise LeaseError(
            f"exporter at {connection.address} keeps no leases (upstream's?), and the lock file that stands for its "
            f"lease can't be used: {exc}"
        ) from None
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder_now, _, since = file.read().partition("\n")
        changed = os.fstat(file.fileno()).st_mtime
        file.close()
        return Busy(holder_now or "another process of this machine", float(since or 0) or changed)
    if file.writable():  # (another user's file that we may not write still locks)
        file.truncate(0)
        file.write(f"{holder}\n{time.time()}")
        file.flush()
    return Lease(connection, f"lock:{path}", lock=file)
