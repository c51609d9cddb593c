"""Exclusive leases kept by the exporter itself, so that no two holders drive one board at once.

One holder at a time; a holder keeps its lease for as long as its ``Lease``
call stays open, so a holder that dies (or whose connection is cut) loses it
as soon as gRPC notices. While a lease is held, calls that touch the hardware
must carry its id; calls of everyone else are refused with who holds it.
Without any lease held, calls need none: upstream clients work as before.

A LeaseSession may keep its lease between its takes (a test run's worker, between its tests): the
exporter records each take as a lease of its own, tells the session when someone else is refused, and
once the lease is released for good hands the exporter for a moment to whoever waits longest, so that
the one who released it can't take it straight back while others wait.

The board goes to no one while a call whose caller gave up still runs on it (a sync method past its
client's call timeout: a thread can't be stopped). A lease's id is never shown (GetLeases and the log
show a handle), and the log has each take before the calls made under it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc

from jumpstarter.common.wire import MAX_HOLDER, MAX_LEASE_BATCH, TAKE_MARK, when
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.exporter.loglimit import LogQuota
from jumpstarter.exporter.readers import let_end
from jumpstarter.exporter.threaded import Stragglers
from jumpstarter.v1 import lease_pb2, lease_pb2_grpc

if TYPE_CHECKING:
    from jumpstarter.exporter.holders import Holders

# The RPCs that stay open to everyone while the exporter is leased: they read, or they are the leasing itself.
# Every other RPC, a new one included, is refused without the lease (deny by default).
OPEN = frozenset(
    {
        "/jumpstarter.v1.ExporterService/GetReport",
        "/jumpstarter.v1.ExporterService/GetStatus",
        "/jumpstarter.v1.ExporterService/LogStream",
        "/jumpstarter.v1.ExporterService/EndSession",
        "/jumpstarter.hil.v1.LeaseService/Lease",
        "/jumpstarter.hil.v1.LeaseService/Release",
        "/jumpstarter.hil.v1.LeaseService/LeaseSession",
        "/jumpstarter.hil.v1.LeaseService/GetLeases",
    }
)


def guarded(method: str) -> bool:
    """Whether RPC ``method`` (``/package.Service/Method``) needs the lease while one is held."""
    return method not in OPEN


log = logging.getLogger("jumpstarter.exporter")


# A holder refused within this many seconds is still waiting: when the lease is released for good, the exporter
# is handed to that waiter for as long (see LeaseSession in lease.proto). Our clients try again at least every
# 75 ms, and far less often on a loaded machine. A LeaseSession says when it stops waiting (stop_waiting, or its
# end), so it gets a long window: one that any load a test run survives keeps it in. A Lease call can't say it,
# so it gets a short one: an exporter isn't held free long for a waiter that went elsewhere.
WAITING = 0.1
SESSION_WAITING = 1.0
# A batch's requests handled between two turns of others' calls (some 0.1 ms of work; a turn costs as much).
YIELD_EVERY = 16


def _patience(who: object) -> float:
    """How long waiter ``who`` counts as waiting after its last refusal."""
    return SESSION_WAITING if isinstance(who, _SessionEnd) else WAITING


class _SessionEnd:
    """The exporter's end of one LeaseSession call: where its notices go, and whether it was told it is wanted."""

    def __init__(self, notify: Callable[[lease_pb2.LeaseResponse], None]) -> None:
        self.notify = notify
        self.keeps = False  # its takes said keep: it keeps leases between takes, and is told when others wait
        self.told = False  # told someone waits, since its last take
        self.hurried = False  # told a call waits for its next take, since its last take
        # Its lease lines: a session may take and release thousands of leases a second, in batches.
        self.log = LogQuota(log, "lease lines of this session")


class Leases(lease_pb2_grpc.LeaseServiceServicer):
    """The lease of one exporter, and a record of past ones (the newest ``keep``)."""

    def __init__(
        self, keep: int = 10_000, stragglers: Stragglers | None = None, holders: Holders | None = None
    ) -> None:
        """``stragglers``: the exporter's calls that run on after their caller gave up (a client's call timeout):
        while one runs, the board is busy, and nobody takes the lease. ``holders``: the config's hooks, run as the
        board changes holder (jumpstarter.exporter.holders)."""
        self.holders = holders
        if holders is not None:
            holders.leases = self
        self.current: lease_pb2.LeaseRecord | None = None
        self.records: deque[lease_pb2.LeaseRecord] = deque(maxlen=keep)
        self._released = asyncio.Event()  # set to end the current Lease call (each lease makes its own)
        self._session: _SessionEnd | None = None  # the LeaseSession that holds the current lease, if one does
        self._kept = False  # the current "lease" is a session's keeping between its leases: not in records
        self._waiters: dict[object, tuple[float, float, str]] = {}  # who was refused: first, last time, name
        self._handed: tuple[object, float] | None = None  # the waiter the exporter is handed to, until when
        self.stragglers = stragglers or Stragglers()
        self.stragglers.on_end.append(self._straggled)
        self.stragglers.holder = lambda: self.current.holder if self.current is not None else ""
        self._takes = 0  # how many times the current lease was taken (a kept one: once per take)
        self._taken = asyncio.Event()  # set (and made anew) at each take and each lease's end

    def refusal(self, lease: str) -> str | asyncio.Event | None:
        """Why a guarded call carrying ``lease`` ("" for none; "ID" or "ID#TAKE") may not run now, or None; or an
        event to wait for, then ask again: the call is made under a take of a kept lease that is on its way (its
        holder sends the take before calling), and runs after the exporter has read it: the log has it first."""
        lease_id, _, take = lease.partition(TAKE_MARK)
        current = self.current
        if current is None:
            return f"lease {lease_id} has ended; take a new one" if lease_id else None
        if lease_id == current.lease_id:
            if not (take.isdigit() and int(take) > self._takes):
                return None
            if self._session is not None and not self._session.hurried:  # it holds the take back, in a batch
                self._session.hurried = True
                self._session.notify(lease_pb2.LeaseResponse(hurry=True, wanted=True))
            return self._taken
        return f"exporter is leased by {current.holder} since {when(current.granted)}"

    async def Lease(
        self, request: lease_pb2.LeaseRequest, context: ServicerContext
    ) -> AsyncIterator[lease_pb2.LeaseResponse]:
        record, answer = await self._take(request, context, request.holder)
        yield answer
        if record is None:
            return
        try:
            await self._released.wait()
        finally:
            self._end(record, "holder vanished")

    async def LeaseSession(
        self, request_iterator: AsyncIterator[lease_pb2.LeaseSessionRequest], context: ServicerContext
    ) -> AsyncIterator[lease_pb2.LeaseResponse]:
        """Answers in the order of the requests, and notices (wanted) between them: a task reads the requests,
        this generator writes what it queues."""
        out: asyncio.Queue[lease_pb2.LeaseResponse | None] = asyncio.Queue()
        end = _SessionEnd(out.put_nowait)
        held: lease_pb2.LeaseRecord | None = None

        async def handle(request: lease_pb2.LeaseSessionRequest) -> None:
            nonlocal held
            if request.HasField("take"):
                if held is not None and not held.ended:  # one lease at a time per session: it is busy
                    out.put_nowait(lease_pb2.LeaseResponse(holder=held.holder, since=held.granted))
                    return
                end.keeps, again = request.take.keep, request.take.keep and self._kept and self._session is end
                held, granted = await self._take(request.take, context, end)
                if not again:  # taking a kept lease again is granted unanswered: its id is known
                    out.put_nowait(granted)
            elif request.HasField("release"):
                keep = request.release.keep and end.keeps
                if held is not None and held.lease_id == request.release.lease_id:
                    self._end(held, "released", keep=end if keep else None, at=request.release.at, by=end)
                    held = None
                elif self._kept and self._session is end and self.current is not None:
                    if self.current.lease_id == request.release.lease_id:
                        self._end(self.current, "let go", by=end)  # kept between leases: free now
                if not keep:  # a release that keeps is unanswered: nobody waits for it
                    out.put_nowait(lease_pb2.LeaseResponse())
            elif request.HasField("stop_waiting"):
                self._stop_waiting(end)
            elif request.HasField("batch"):
                if len(request.batch.requests) > MAX_LEASE_BATCH:
                    why = (
                        f"a LeaseSession batch of {len(request.batch.requests)} requests, more than the "
                        f"{MAX_LEASE_BATCH} an exporter takes in one: send them in smaller batches"
                    )
                    log.info("refused a lease session of %s: %s", held.holder if held else "no lease", why)
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
                for n, each in enumerate(request.batch.requests, 1):
                    if not each.HasField("batch"):  # one level: a batch is the client's, of takes and releases
                        await handle(each)
                    if n % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # others' calls run in between

        async def answer() -> None:
            try:
                async for request in request_iterator:
                    await handle(request)
            finally:
                out.put_nowait(None)

        reader = asyncio.ensure_future(answer())
        try:
            while (response := await out.get()) is not None:
                yield response
            await reader  # its error, if it failed (an aborted take)
        finally:
            let_end(reader)  # not cancelled: see exporter/readers.py
            if held is not None:
                self._end(held, "holder vanished", by=end)
            if self._session is end:  # kept between its leases: free again
                self._end(self.current, "holder vanished", by=end)
            if self.holders is not None:
                self.holders.vanished(end)
            self._stop_waiting(end)
            end.log.close()

    async def _take(
        self, request: lease_pb2.LeaseRequest, context: ServicerContext, who: object
    ) -> tuple[lease_pb2.LeaseRecord | None, lease_pb2.LeaseResponse]:
        """The lease for ``request.holder`` if it is free (its record, and the granting answer), else who has it.
        ``who``: the asking LeaseSession's end, or the holder's name for a Lease call."""
        if len(request.holder) > MAX_HOLDER:
            why = (
                f"lease holder name is {len(request.holder)} characters, more than the {MAX_HOLDER} an exporter keeps: "
                f"shorten it (it begins {request.holder[:40]!r})"
            )
            log.info("refused a lease: %s", why)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
        # No await from here on: one event loop, no race.
        now, current, session = time.time(), self.current, who if isinstance(who, _SessionEnd) else None
        current_id = current.lease_id if current is not None else None
        hooks: list[lease_pb2.HookRun] = []
        failed = self.holders.refusal(who, request.holder) if self.holders is not None else None
        if failed is not None:  # its beforeLease hook failed (endLease, exit), or the exporter stops for a hook
            self._waiters.pop(who, None)
            return None, failed
        if current is not None and self._kept and self._session is session and session is not None:
            lease_id = current.lease_id  # kept for this session: granted at once, with the same id
            now = max(current.granted, min(request.at or now, now))  # taken a moment ago, maybe
        elif current is not None or self._handed_elsewhere(who, now) or self.stragglers.running:
            return None, self._refuse(who, request.holder, now)
        elif self.holders is not None:  # a hook may run first: the board is the hook's, and this taker waits
            granted, lease_id = self.holders.free_for(who, request.holder)
            if not granted:
                return None, self._refuse(who, request.holder, now)
            hooks = self.holders.ran_for(who, self._waiters.get(who, (now,))[0])
        else:
            lease_id = secrets.token_hex(16)  # 128 random bits: nobody guesses it
        if session is not None:  # told again if someone (still) waits: a notice may have crossed a kept take
            session.told = session.hurried = False
        record = lease_pb2.LeaseRecord(lease_id=lease_id, holder=request.holder, granted=now)
        self.current, self._released, self._session, self._kept = record, asyncio.Event(), session, False
        self._takes = self._takes + 1 if lease_id == current_id else 1
        self._next_take()
        self._waiters.pop(who, None)
        self._handed = None
        self.records.append(record)
        (session.log.info if session is not None else log.info)(
            "lease %s taken by %s", handle(record.lease_id), record.holder
        )
        keeps = session is not None and session.keeps
        return record, lease_pb2.LeaseResponse(lease_id=record.lease_id, keeps=keeps, hooks=hooks)

    def _next_take(self) -> None:
        """Wake the calls that wait for a take (see ``refusal``): they ask again."""
        self._taken.set()
        self._taken = asyncio.Event()

    def _handed_elsewhere(self, who: object, now: float) -> bool:
        """Whether the free exporter is handed to a waiter other than ``who`` for a moment yet."""
        return self._handed is not None and self._handed[0] is not who and now < self._handed[1]

    def _refuse(self, who: object, holder: str, now: float) -> lease_pb2.LeaseResponse:
        """Busy: who holds the exporter (or waits first for it). ``who`` is remembered as waiting, and a session
        holding the exporter is told someone waits."""
        if len(self._waiters) > 100:  # many names tried: forget those that stopped trying
            self._waiters = {w: seen for w, seen in self._waiters.items() if now - seen[1] < _patience(w)}
        first = self._waiters.get(who, (now, now, holder))[0]
        self._waiters[who] = (first, now, holder)
        current = self.current
        straggler = self.stragglers.oldest()
        if current is None and straggler is not None:  # the board is still busy with a call nobody waits for
            what, since = straggler
            busy = f"the board: its call {what}, whose caller gave up {now - since:.0f} s ago, still runs"
            return lease_pb2.LeaseResponse(holder=busy, since=since)
        if current is None:  # handed to another waiter for a moment
            assert self._handed is not None
            _, _, name = self._waiters.get(self._handed[0], (now, now, "another waiter"))
            return lease_pb2.LeaseResponse(holder=f"{name} (handed over, taking it)", since=now)
        if self._session is not None and self._session.keeps and not self._session.told:
            self._session.told = True
            self._session.notify(lease_pb2.LeaseResponse(wanted=True))
        return lease_pb2.LeaseResponse(holder=current.holder, since=current.granted)

    async def Release(self, request: lease_pb2.ReleaseRequest, context: ServicerContext) -> lease_pb2.ReleaseResponse:
        current = self.current
        if current is not None and current.lease_id == request.lease_id and not self._kept:
            self._end(current, "released")
            self._released.set()  # ends the Lease call
        return lease_pb2.ReleaseResponse()

    def _end(
        self,
        record: lease_pb2.LeaseRecord | None,
        how: str,
        keep: _SessionEnd | None = None,
        at: float = 0.0,
        by: _SessionEnd | None = None,
    ) -> None:
        """End ``record``'s lease; ``keep``: keep the exporter for that session's next take; ``at``: when the
        holder ended it, if a moment ago (0: now); ``by``: the session that held it, whose log budget it uses."""
        if record is None or record.ended:
            return
        now = time.time()
        record.released, record.ended = max(record.granted, min(at or now, now)), how
        (by.log.info if by is not None else log.info)(
            "lease %s %s after %.3f s: %s",
            handle(record.lease_id),
            how,
            record.released - record.granted,
            record.holder,
        )
        if self.current is not record:
            return
        if keep is not None:  # (told or not: a notice may be on its way; the session lets go when it reads it)
            holder = f"{record.holder} (kept between its leases)"
            self.current = lease_pb2.LeaseRecord(lease_id=record.lease_id, holder=holder, granted=record.released)
            self._kept = True
            return
        owner = self._session if self._session is not None else record.holder
        self.current, self._session, self._kept, self._takes = None, None, False, 0
        self._next_take()
        if self.holders is not None and self.holders.ended(owner):
            return  # its afterLease hook runs: the board is the hook's until it ends
        self._hand_over(record.released)

    def hook_holds(self, record: lease_pb2.LeaseRecord) -> None:
        """A hook runs: the board is its own (``record``: a lease whose id only the hook's calls carry)."""
        record.granted = time.time()
        self.current, self._session, self._kept, self._takes = record, None, False, 0
        self._next_take()

    def hook_done(self, to: object | None) -> None:
        """The hook has ended: the board is free, handed to ``to`` (the taker it ran for), else to whoever waits
        longest."""
        self.current = None
        self._next_take()
        now = time.time()
        if to is None or not (isinstance(to, (str, _SessionEnd))):
            self._hand_over(now)
            return
        self._handed = (to, now + _patience(to))
        if isinstance(to, _SessionEnd):
            to.notify(lease_pb2.LeaseResponse(handed=True, wanted=True))

    async def close(self) -> None:
        """The exporter stops: nobody takes the lease any more, and a hook's business is done (Holders.close): the
        lease held now ends, so that its holder's afterLease hook runs."""
        if self.holders is not None:
            self.holders.stopping = True
            if self.holders.tidy_at_stop and self.holders.task is None and self.current is not None:
                self._end(self.current, "the exporter stops")
            await self.holders.close()

    def _hand_over(self, now: float) -> None:
        """Hand the freed exporter for a moment to whoever waits longest (and still waits)."""
        waiting = {who: first for who, (first, last, _) in self._waiters.items() if now - last < _patience(who)}
        self._waiters = {who: self._waiters[who] for who in waiting}
        self._handed = None
        if waiting:
            who = min(waiting, key=waiting.__getitem__)
            self._handed = (who, now + _patience(who))
            if isinstance(who, _SessionEnd):  # it needn't wait for its next try (wanted: read as a notice)
                who.notify(lease_pb2.LeaseResponse(handed=True, wanted=True))

    def _straggled(self) -> None:
        """The board's last straggling call has returned: a free exporter goes to whoever waits longest."""
        if self.current is None:
            self._hand_over(time.time())

    def _stop_waiting(self, end: _SessionEnd) -> None:
        """Session ``end`` waits no more: forget it, and if the free exporter was handed to it, hand it on."""
        self._waiters.pop(end, None)
        if self._handed is not None and self._handed[0] is end:
            self._hand_over(time.time())

    async def GetLeases(
        self, request: lease_pb2.GetLeasesRequest, context: ServicerContext
    ) -> lease_pb2.GetLeasesResponse:
        """Who held the exporter and when. A lease id is its holder's secret (it lets calls through, and
        releases), ended or not: a kept lease's next take has the same id. Records show its handle instead."""
        leases = [_shown(record) for record in self.records]
        if self._kept and self.current is not None:
            leases.append(lease_pb2.LeaseRecord(holder=self.current.holder, granted=self.current.granted))
        return lease_pb2.GetLeasesResponse(leases=leases)


def _shown(record: lease_pb2.LeaseRecord) -> lease_pb2.LeaseRecord:
    """``record`` as others may see it: its lease's handle in place of its id."""
    shown = lease_pb2.LeaseRecord()
    shown.CopyFrom(record)
    shown.lease_id = handle(record.lease_id)
    return shown


@functools.lru_cache(maxsize=64)
def handle(lease_id: str) -> str:
    """A name for lease ``lease_id`` that logs and GetLeases may show: it tells leases apart (a kept lease's takes
    share it), and doesn't let calls through (a hash of the id, which the id can't be found from)."""
    return "h-" + hashlib.sha256(lease_id.encode()).hexdigest()[:12]
