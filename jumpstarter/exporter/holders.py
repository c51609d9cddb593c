"""When an exporter's hooks run: as its board changes holder, and what GetStatus says meanwhile.

Upstream runs beforeLease / afterLease under its controller's leases; this exporter has leases of its own
(jumpstarter.exporter.lease), so a hook runs when the board changes holder: beforeLease before a new holder's
first call, afterLease once a holder has let the board go (released it, vanished, or froze). A LeaseSession that
keeps the board between its leases (a test run's worker, between its tests) is one holder. Clients that take no
lease (upstream's) are one holder too, whose beforeLease runs when one of them asks GetStatus first, as
upstream's ``jmp shell`` does, and whose afterLease runs at EndSession or when a lease is taken.

While a hook runs the board is the hook's (a lease whose id only the hook has: others are refused, as by a
holder), and GetStatus reports upstream's status values, so that upstream's client waits as it does with
upstream's exporter. A failed hook: ``warn`` logs and goes on; ``endLease`` refuses the take it ran for, with
its output; ``exit`` does that, then stops the exporter. An exporter that stops tidies the board first: the
afterLease of a holder it was prepared for runs (a beforeLease running then is killed first), unless stopped again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from jumpstarter.exporter.hooks import Where, describe, environment, run_hook
from jumpstarter.v1 import common_pb2, lease_pb2

if TYPE_CHECKING:
    from jumpstarter.config.hooks import Hooks, HookSpec
    from jumpstarter.exporter.lease import Leases

log = logging.getLogger("jumpstarter.exporter")

AVAILABLE: int = common_pb2.EXPORTER_STATUS_AVAILABLE
LEASE_READY: int = common_pb2.EXPORTER_STATUS_LEASE_READY
RUNNING = {
    "beforeLease": common_pb2.EXPORTER_STATUS_BEFORE_LEASE_HOOK,
    "afterLease": common_pb2.EXPORTER_STATUS_AFTER_LEASE_HOOK,
}
FAILED: dict[str, int] = {
    "beforeLease": common_pb2.EXPORTER_STATUS_BEFORE_LEASE_HOOK_FAILED,
    "afterLease": common_pb2.EXPORTER_STATUS_AFTER_LEASE_HOOK_FAILED,
}
HOOK_WARNING = "Hook warning: "  # upstream's prefix of a status message that a warn hook failed
FAILED_STICKS = 5.0  # seconds a failed hook's status stays before a lease-less client's GetStatus tries again
EXIT_GRACE = 1.0  # seconds between an exit hook's failure and the exporter's stop: its waiter reads why
RUNS_KEPT = 64
MAX_TAKERS = 1000  # takers remembered (a failed hook to tell, runs they waited for) until they take again


class Leaseless:
    """The clients that take no lease (upstream's), as one holder."""

    def __repr__(self) -> str:
        return "clients without a lease"


LEASELESS = Leaseless()


class Holders:
    """Which holder the board is prepared for, the hook running now, and the status GetStatus reports."""

    def __init__(self, hooks: Hooks, on_exit: Callable[[str], None], tidy_at_stop: bool = True) -> None:
        """``on_exit(why)``: stop the exporter (a hook with onFailure exit failed). ``tidy_at_stop``: run a pending
        afterLease when the exporter stops (an exporter of its own process: ``jumpstarter run``)."""
        self.hooks, self.on_exit, self.tidy_at_stop = hooks, on_exit, tidy_at_stop
        self.where = Where("")
        self.leases: Leases | None = None  # set by Leases
        self.prepared: object | None = None  # whom beforeLease ran for, and afterLease hasn't yet
        self.prepared_id = ""  # the lease id the prepared holder gets (LEASE_NAME: its handle)
        self.prepared_name = ""
        self.task: asyncio.Task | None = None
        self.running: tuple[HookSpec, object | None, str, str] | None = None  # the task's hook, then, name, lease id
        self.stopping = self.killed = False  # the exporter stops; stopped again: no hook runs any more
        self.runs: deque[lease_pb2.HookRun] = deque(maxlen=RUNS_KEPT)
        self.failed: dict[object, lease_pb2.HookRun] = {}  # whose beforeLease failed (endLease, exit): told at take
        self.exiting: lease_pb2.HookRun | None = None
        self.waited: dict[object, list[lease_pb2.HookRun]] = {}  # the runs each taker waited for, till its grant
        self.gone: set[object] = set()  # takers that vanished while a hook ran for them
        self.status: int = AVAILABLE
        self.previous: int = AVAILABLE
        self.message, self.version = "", 1
        self._failed_at = 0.0

    # What Leases asks --------------------------------------------------------------------------------------

    def refusal(self, who: object, holder: str) -> lease_pb2.LeaseResponse | None:
        """A take by ``who`` that can't be granted because of a hook: the answer (its failure), or None."""
        run = self.exiting or self.failed.pop(who, None)
        if run is None and self.stopping:
            return lease_pb2.LeaseResponse(holder="nobody: the exporter is stopping", since=time.time())
        if run is None:
            return None
        return lease_pb2.LeaseResponse(holder=describe(run), since=run.ended, hooks=[run])

    def free_for(self, who: object, holder: str) -> tuple[bool, str]:
        """The board is free, and ``who`` takes it: (whether to grant it now, the lease id to grant). When not,
        a hook has started (the board is the hook's: refuse ``who`` as busy, and hand it over when it ends)."""
        if self.prepared is who:
            return True, self.prepared_id
        if self.prepared is not None and self.hooks.after_lease is not None:
            self.start(self.hooks.after_lease, then=who, then_name=holder)
            return False, ""
        self.prepared = None
        return self.prepare(who, holder), self.prepared_id

    def prepare(self, who: object, name: str) -> bool:
        """Prepare the board for ``who``: True if it is (no beforeLease), False if its beforeLease runs now."""
        lease_id = secrets.token_hex(16)
        if self.hooks.before_lease is None:
            self.prepared, self.prepared_id, self.prepared_name = who, lease_id, name
            self._set(LEASE_READY)
            return True
        self.start(self.hooks.before_lease, then=who, then_name=name, lease_id=lease_id)
        return False

    def ended(self, who: object) -> bool:
        """``who``'s hold has ended for good: True if afterLease runs now (the board is its)."""
        if self.prepared is not who:
            return False
        if self.hooks.after_lease is None:
            self.prepared = None
            self._set(AVAILABLE)
            return False
        self.start(self.hooks.after_lease)
        return True

    def vanished(self, who: object) -> None:
        """Taker ``who`` is gone (its LeaseSession ended): a board prepared for it gets its afterLease now (or
        when its beforeLease, still running, ends); it waits for nothing any more."""
        self.waited.pop(who, None)
        self.failed.pop(who, None)
        if self.task is not None:
            self.gone.add(who)
        elif self._idle() and self.prepared is who and not self.ended(who):
            assert self.leases is not None
            self.leases.hook_done(None)

    def ran_for(self, who: object, first: float) -> list[lease_pb2.HookRun]:
        """The runs ``who`` waited for: those it started, and those that ended since ``first`` (its first
        refusal)."""
        runs = self.waited.pop(who, [])
        return runs + [run for run in self.runs if run.ended >= first and all(run is not r for r in runs)]

    # What clients without a lease ask ---------------------------------------------------------------------

    def get_status(self, leased_call: bool, peer: str) -> tuple[int, str, int, int]:
        """(status, message, version, previous) for GetStatus. A client without a lease asking while the board
        is prepared for nobody starts the lease-less clients' beforeLease, as upstream's exporter runs it for
        the client that connects."""
        if not leased_call and self._idle() and self.prepared is None and not self._failed_recently():
            self.prepare(LEASELESS, f"a client without a lease ({peer})")
        return self.status, self.message, self.version, self.previous

    def end_session(self) -> None:
        """EndSession from a client without a lease: the lease-less clients let the board go (afterLease)."""
        if self._idle() and self.prepared is LEASELESS and not self.ended(LEASELESS):
            assert self.leases is not None
            self.leases.hook_done(None)

    # Running ----------------------------------------------------------------------------------------------

    def start(self, spec: HookSpec, then: object | None = None, then_name: str = "", lease_id: str = "") -> None:
        """Run ``spec`` with the board the hook's; ``then``: whom the board is prepared for if it succeeds (a
        beforeLease), or who waits for it (an afterLease, after which its beforeLease runs)."""
        assert self.leases is not None
        before = spec.name == "beforeLease"
        client = then_name if before else self.prepared_name
        lease_name = lease_id or self.prepared_id
        hook_id = secrets.token_hex(16)
        self.leases.hook_holds(lease_pb2.LeaseRecord(lease_id=hook_id, holder=f"its {spec.name} hook, for {client}"))
        self._set(RUNNING[spec.name], f"{spec.name} hook running")
        from jumpstarter.exporter.lease import handle

        env = environment(self.where, hook_id, handle(lease_name) if lease_name else "", client)
        self.task = asyncio.ensure_future(run_hook(spec, env, client))
        self.running = (spec, then, then_name, lease_id)
        self.task.add_done_callback(lambda task: self._finished(task, spec, then, then_name, lease_id))

    def _finished(self, task: asyncio.Task, spec: HookSpec, then: object | None, then_name: str, lease_id: str) -> None:
        assert self.leases is not None
        if self.task is task:
            self.task = self.running = None
        if task.cancelled():  # the exporter stops
            return
        if task.exception() is not None:  # not the hook's failure: ours; the board goes on, unprepared
            log.error("%s hook: %r", spec.name, task.exception())
            self.prepared = None
            self.leases.hook_done(None)
            return
        run = task.result()
        self.runs.append(run)
        failure = run.failure and spec.on_failure != "warn"
        if spec.name == "afterLease":
            self.prepared, self.prepared_id = None, ""
        elif failure:
            _remember(self.failed, then, run)
        else:
            self.prepared, self.prepared_id, self.prepared_name = then, lease_id, then_name
        if failure:
            self._failed_at = time.monotonic()
            self._set(FAILED[spec.name], f"{describe(run)}: {run.output[-2000:]}")
        elif run.failure:
            self._set(LEASE_READY if spec.name == "beforeLease" else AVAILABLE, f"{HOOK_WARNING}{describe(run)}")
        else:
            self._set(LEASE_READY if spec.name == "beforeLease" else AVAILABLE)
        if run.failure and spec.on_failure == "exit":
            self.exiting = run
            asyncio.get_running_loop().call_later(EXIT_GRACE, self.on_exit, f"{describe(run)}:\n{run.output[-4000:]}")
        if then in self.gone:  # it vanished while its hook ran: the board is let go at once
            self.gone.discard(then)
            if self.prepared is then and self.ended(then):
                return
            then = None
        if then is not None:
            _remember(self.waited, then, [*self.waited.get(then, []), run][-RUNS_KEPT:])
        self.leases.hook_done(then if spec.name == "beforeLease" else None)

    async def close(self) -> None:
        """The exporter stops (its lease holder's lease ended: see Leases.close). A running beforeLease is killed,
        with its children; then the holder the board was prepared for (or being prepared for) gets its afterLease,
        which runs to its end or its timeout, unless ``kill()`` ends it first. Without ``tidy_at_stop``, the running
        hook is killed, and that is all."""
        self.stopping = True
        running = self.running
        if running is not None and (running[0].name == "beforeLease" or not self.tidy_at_stop):
            await self._cancel()
            spec, then, name, lease_id = running
            if spec.name == "beforeLease" and then is not None:  # the board may be half prepared: tidy it
                self.prepared, self.prepared_id, self.prepared_name = then, lease_id, name
        after = self.hooks.after_lease
        if self.tidy_at_stop and after is not None and self.task is None and self.prepared is not None:
            if not self.killed:
                self.start(after)
        if self.task is not None:  # an afterLease, tidying the board
            log.info("the exporter stops once its afterLease hook has run (stop it again to kill the hook)")
            await asyncio.gather(self.task, return_exceptions=True)

    def kill(self) -> bool:
        """Stop at once: the running hook is killed, with its children, and none runs after it. Whether one ran."""
        if self.task is None:
            self.killed = True
            return False
        if not self.killed:  # (once: cancelled again, its kill would be cut short, before SIGKILL)
            self.killed = True
            self.task.cancel()
        return True

    async def _cancel(self) -> None:
        task = self.task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if self.task is task:
                self.task = self.running = None

    def _idle(self) -> bool:
        return self.task is None and self.exiting is None and self.leases is not None and self.leases.current is None

    def _failed_recently(self) -> bool:
        return self.status in FAILED.values() and time.monotonic() - self._failed_at < FAILED_STICKS

    def _set(self, status: int, message: str = "") -> None:
        if status != self.status or message != self.message:
            self.previous, self.status, self.message = self.status, status, message
            self.version += 1


def _remember(found: dict, who: object, what: object) -> None:
    """``found[who] = what``, forgetting the oldest entries past MAX_TAKERS (takers that never came back)."""
    found.pop(who, None)
    found[who] = what
    while len(found) > MAX_TAKERS:
        del found[next(iter(found))]
