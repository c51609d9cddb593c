"""Exporters from a labgrid lab (``--lab labgrid://HOST:PORT``): the coordinator queues, our exporters lock.

A claim reserves a place per group of exports (tags: the test's labels and ``--lab-tag``; ``name`` in matrix
mode), waits for the coordinator to allocate them all, acquires them, reads each place's exporter address, and
takes that exporter's lease as an ``--exporter`` claim does: the lease stays the lock (a board leased outside
the lab's queue is waited for). Places go back when the claim is released; reservations are cancelled on
every way out. A place that can't serve (no exporter published, down, bad data, lacking an export) is kept
reserved for the rest of the claim, so the coordinator allocates the next one: the test goes elsewhere.

Beside it: labgrid_places.py reads a place's exporter, labgrid_groups.py which places fit a claim's exports,
labgrid_stale.py takes back the places of holders of ours that died.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from jumpstarter.client.connection import TLS
from jumpstarter.client.lease import Busy, stop_waiting, wait_for_handover
from jumpstarter.errors import ConnectError
from jumpstarter.labgrid import board
from jumpstarter.labgrid.coordinator import CoordinatorError, Session, parse_url
from pytest_jumpstarter.exporters import Exporter, Unanswered
from pytest_jumpstarter.labgrid_groups import Group, fitting, group_needs, holders, no_place, providers
from pytest_jumpstarter.labgrid_places import PlaceExporter, exports_of, read_boards
from pytest_jumpstarter.labgrid_stale import StaleHolders
from pytest_jumpstarter.pool import Claim, ClaimError, Needs, Pool

RETRY = 1.0  # seconds between attempts to reach a coordinator that went away
POLL = 1.0  # at most this long between polls of a reservation (the session's updates wake us sooner)
BAD_FOR = 10.0  # seconds a place that failed (its exporter unreachable) is skipped before it is tried again
PARTIAL_HOLD = 2.0  # seconds a claim of several places keeps some while waiting for the rest (then backs off)
REPEAT_NOTICE = 30.0


@dataclass
class PlaceClaim(Claim):
    """A claim's leases, and the places that go back to the lab with them."""

    pool: LabgridPool | None = None

    def release(self) -> None:
        super().release()
        if self.pool is not None:
            self.pool.give_back(self.places)
        self.places = []


class _AllUnusable(Exception):
    """Every fitting place is unusable for now (its exporter not published, or unreachable): start over."""


class _NoPlaceYet(Exception):
    """No place carries a group's tags: wait for one, as ``labgrid-client reserve --wait`` does (an admin may be
    making it, or a restarted coordinator getting it back from its exporter)."""

    def __init__(self, group: Group) -> None:
        super().__init__(str(group))
        self.group, self.key = group, tuple(sorted(group.tags.items()))


class LabgridPool(Pool):
    """Claims through the coordinator at ``address``; one session per process, opened again if it breaks."""

    def __init__(
        self, address: str, passphrase: str | None, tls: TLS, tags: dict[str, str], priority: float, role: str = ""
    ) -> None:
        super().__init__([], 0)
        self.role = role or "pytest"
        self.address, self.passphrase, self.tls = address, passphrase, tls
        self.tags, self.priority = tags, priority
        self.session: Session | None = Session(address, role=self.role)
        self._exporters: dict[tuple[str, str], PlaceExporter] = {}  # by (place, exporter), kept across claims
        self._bad: dict[str, tuple[float, str]] = {}  # place -> (monotonic, why): skipped for BAD_FOR s
        self._stale = StaleHolders()
        self.notes: list[str] = []  # lines for the run's end (say what we took back)
        self._transient = False
        self._never: dict[tuple, float] = {}  # tags no place carried for a whole claim's wait -> its seconds

    # -- the directory --------------------------------------------------------------------------------------------

    def boards(self) -> list[PlaceExporter]:
        """The exporters of each place that has good JumpstarterExporter resources now (for the fixtures)."""
        session = self._live()
        found = []
        for place in sorted(session.places.values(), key=lambda p: p.name):
            try:
                found += self._place_exporters(session, place.name)
            except board.BoardError:
                continue
        return found

    def _place_exporters(self, session: Session, place: str) -> list[PlaceExporter]:
        """A client for each exporter of ``place`` (BoardError: it has none, or bad data)."""
        return [self._exporter(found) for found in read_boards(session, place)]

    def _exporter(self, found: board.Board) -> PlaceExporter:
        key = (found.place, found.exporter)
        exporter = self._exporters.get(key)
        if exporter is None or exporter.board != found:
            if exporter is not None:
                exporter.close()
            exporter = self._exporters[key] = PlaceExporter(found, self.passphrase, self.tls)
        return exporter

    def _live(self) -> Session:
        """The session, opened again when the coordinator went away (CoordinatorError while it is away)."""
        if self.session is not None and self.session.broken:
            self.session.close()
            self.session = None
        if self.session is None:
            self.session = Session(self.address, role=self.role)
        return self.session

    def candidates(
        self, export: str | None, labels: dict[str, str], pinned: str | None = None, avoid: frozenset[str] = frozenset()
    ) -> list[Exporter]:
        """The exporters of the places that fit now and provide ``export``, but those in ``avoid`` (whether a retry
        elsewhere can be had: attempts.py); none while the coordinator is away."""
        try:
            session = self._live()
        except CoordinatorError:
            return []
        group = Group([export] if export is not None else [], {**self.tags, **labels}, avoid=avoid)
        if pinned is not None:
            group.tags["name"] = pinned
        found: list[Exporter] = []
        for place in providers(session, group):
            try:
                found += [e for e in self._place_exporters(session, place) if e.provides(export)]
            except board.BoardError:
                continue
        return found

    def targets(self, needs: Needs) -> list[str]:
        """The places a test runs on in matrix mode: each that carries its tags (its labels and ``--lab-tag``)
        and has every export it uses (a place of several exporters counts as one)."""
        session = self._live()
        fit = None
        for export, labels in needs.items():
            group = Group([export] if export is not None else [], {**self.tags, **labels})
            found = set(providers(session, group))
            fit = found if fit is None else fit & found
        names = sorted(fit or ())
        return [n for n in names if n not in self.avoid] or names

    # -- claiming -------------------------------------------------------------------------------------------------

    def claim(
        self,
        needs: Needs,
        holder: str,
        timeout: float,
        pinned: str | None = None,
        notify: Callable[[str], None] = lambda text: None,
        avoid: frozenset[str] = frozenset(),
    ) -> Claim:
        deadline = time.monotonic() + timeout
        waited: dict[str, None] = {}
        said, missing = "", False
        while True:
            try:
                session = self._live()
                seen = session.version
                wanted = group_needs(session, needs, self.tags, pinned, avoid)
                claim = self._claim(wanted, holder, deadline, timeout, notify, waited)
            except _NoPlaceYet as exc:
                why = no_place(session, self.address, exc.group)
                if exc.key in self._never:  # a claim waited for such a place already, in vain: don't again
                    raise ClaimError(f"{why}; an earlier test waited {self._never[exc.key]:g} s for one") from None
                if time.monotonic() >= deadline:
                    self._never[exc.key] = timeout
                    raise ClaimError(f"waited {timeout:g} s for {self._wanted(needs)}: {why}") from None
                if not missing:
                    why = no_place(session, self.address, exc.group, yet=True)
                    notify(f"{why}: waiting for one, up to {timeout:g} s (--lease-timeout)")
                    missing = True
                session.wait_change(seen, min(POLL, max(0.0, deadline - time.monotonic())))
                continue
            except (_AllUnusable, CoordinatorError) as exc:  # nothing usable now, or the coordinator away: wait
                if isinstance(exc, CoordinatorError) and not exc.unreachable:
                    raise ClaimError(str(exc)) from None
                if time.monotonic() >= deadline:
                    raise ClaimError(f"waited {timeout:g} s for {self._wanted(needs)}: {exc}") from None
                if str(exc) != said:
                    notify(f"{exc}; trying again every {RETRY:g} s")
                    said = str(exc)
                time.sleep(min(RETRY, max(0.0, deadline - time.monotonic())))
                continue
            first = next(iter(claim.chosen.values()))
            for export in needs:  # the exports of one group share its place; `exporter` alone takes the first
                claim.chosen.setdefault(export, first)
            claim.queued_behind = tuple(waited)
            return claim

    def _claim(
        self,
        groups: list[Group],
        holder: str,
        deadline: float,
        timeout: float,
        notify: Callable[[str], None],
        waited: dict[str, None],
    ) -> PlaceClaim:
        session = self._live()
        for group in groups:
            if not fitting(session, group):
                raise _NoPlaceYet(group)
            if not [p for p in fitting(session, group) if p not in group.avoid]:
                tried = ", ".join(sorted(group.avoid))
                raise ClaimError(f"no place other than {tried} (where this test failed) can serve {group}")
        parked: list[str] = []  # reservations holding places that can't serve, so that others are allocated
        self._transient = False  # whether a place was parked for a reason that may pass
        try:
            for group in groups:
                group.token = session.reserve(group.tags, self.priority)
            partial_since: float | None = None
            last_notice, last_why, last_stale = 0.0, "", 0.0
            while True:
                seen = session.version
                allocated = {id(g): session.poll(g.token) for g in groups}
                if all(allocated.values()):
                    bad = self._skip_bad(session, groups, allocated, parked, notify)
                    if bad:
                        continue
                    ready = time.monotonic()  # all allocated: the queue is over, acquiring and leasing follow
                    claim = self._take(session, groups, allocated, holder, deadline, timeout, notify, waited)
                    if claim is not None:
                        claim.queued = ready - (deadline - timeout)
                        return claim
                    continue  # a place failed as we took it: marked bad, reserved again
                now = time.monotonic()
                if len(groups) > 1 and any(allocated.values()):
                    partial_since = partial_since or now
                    if now - partial_since > PARTIAL_HOLD:  # hold none while waiting: no deadlock between two runs
                        for group in groups:
                            _quietly(session.cancel, group.token)
                            group.token = ""
                        time.sleep(random.uniform(0.05, 0.5))
                        for group in groups:
                            group.token = session.reserve(group.tags, self.priority)
                        partial_since = None
                        continue
                why = holders(session, groups, waited)
                if now >= deadline:  # timed out in the queue: its time shows as queued, behind the places held
                    error = ClaimError(f"waited {timeout:g} s for {' and '.join(map(str, groups))}: {why}")
                    error.queued, error.queued_behind = now - (deadline - timeout), tuple(waited)
                    raise error
                if why != last_why or now - last_notice >= REPEAT_NOTICE:
                    notify(
                        f"queued at the labgrid coordinator {self.address} for {' and '.join(map(str, groups))}: {why}"
                    )
                    last_why, last_notice = why, now
                if now - last_stale >= 1.0:
                    last_stale = now
                    self._take_back_stale(session, groups, notify)
                if session.broken:
                    raise CoordinatorError(f"labgrid coordinator at {self.address}: {session.broken}", unreachable=True)
                session.wait_change(seen, min(POLL, max(0.0, deadline - now)))
        finally:
            for token in [g.token for g in groups if g.token] + parked:
                _quietly(session.cancel, token)
            for group in groups:
                group.token = ""

    def _skip_bad(
        self,
        session: Session,
        groups: list[Group],
        allocated: dict[int, str | None],
        parked: list[str],
        notify: Callable[[str], None],
    ) -> bool:
        """Park the reservation of each allocated place that can't serve its group and reserve again; ClaimError
        when every fitting place is parked. True if any was."""
        skipped = False
        for group in groups:
            place = allocated[id(group)]
            assert place is not None
            unusable = self._unusable(session, place, group)
            if unusable is None:
                continue
            why, transient = unusable
            skipped = True
            notify(f"skipping place {place}: {why}")
            parked.append(group.token)
            group.token = ""
            held = {allocated[id(g)] for g in groups} | self._parked_places(session, parked)
            if not [p for p in fitting(session, group) if p not in held]:
                if transient or self._transient:
                    raise _AllUnusable(f"no place can serve {group} now: {why}")
                raise ClaimError(f"no place left for {group}: {why}")
            self._transient = self._transient or transient
            group.token = session.reserve(group.tags, self.priority)
        return skipped

    def _parked_places(self, session: Session, parked: list[str]) -> set[str]:
        return {p.name for p in session.places.values() if p.reservation in parked}

    def _unusable(self, session: Session, place: str, group: Group) -> tuple[str, bool] | None:
        """Why ``place`` can't serve ``group`` and whether that may pass, or None if it can."""
        if place in group.avoid:
            return "this test failed there already: trying elsewhere", False
        bad = self._bad.get(place)
        if bad is not None and time.monotonic() - bad[0] < BAD_FOR:
            return bad[1], True
        try:
            exports = exports_of(read_boards(session, place))
        except board.BoardError as exc:
            return str(exc), exc.transient
        missing = [e for e in group.exports if e not in exports]
        if not missing:
            return None
        lacks = f"no export {', '.join(map(repr, missing))} (it has: {', '.join(exports)})"
        away = session.unfilled(session.places[place], board.RESOURCE_CLASS) if place in session.places else []
        if away:  # one of its exporters may bring them when it is back
            return f"its exporters have {lacks}, and {', '.join(away)} is not published (stopped?)", True
        return f"its exporter has {lacks}", False

    def _take(
        self,
        session: Session,
        groups: list[Group],
        allocated: dict[int, str | None],
        holder: str,
        deadline: float,
        timeout: float,
        notify: Callable[[str], None],
        waited: dict[str, None],
    ) -> PlaceClaim | None:
        """Acquire every allocated place and lease all its exporters; None (all given back) if one failed."""
        claim = PlaceClaim({}, pool=self)
        busy: list[str] = []  # places whose exporter was leased outside the lab's queue: waited for
        try:
            for group in groups:
                place = allocated[id(group)]
                assert place is not None
                exporters = self._place_exporters(session, place)
                try:
                    session.acquire(place)
                except CoordinatorError as exc:
                    if exc.unreachable:
                        raise
                    self._bad[place] = (time.monotonic(), str(exc))
                    claim.release()
                    return None
                claim.places.append(place)
                for exporter in exporters:
                    try:
                        claim.leases[exporter] = self._lease(exporter, holder, deadline, timeout, notify, busy)
                    except ConnectError as exc:
                        self._bad[place] = (time.monotonic(), f"its exporter can't be reached: {exc}")
                        notify(f"skipping place {place}: its exporter can't be reached: {exc}")
                        claim.release()
                        return None
                for export in group.exports:
                    claim.chosen[export] = next(e for e in exporters if export in e.exports)
                if not group.exports:
                    claim.chosen[None] = exporters[0]
            claim.waited_for = tuple(dict.fromkeys(busy))
            return claim
        except BaseException:
            claim.release()
            raise

    def _lease(
        self,
        exporter: PlaceExporter,
        holder: str,
        deadline: float,
        timeout: float,
        notify: Callable[[str], None],
        busy: list[str],
    ) -> Any:
        """The exporter's own lease: the lock. Someone who took it outside the lab's queue is waited for."""
        said = ""
        try:
            while True:
                from jumpstarter.client.lease import handovers

                seen = handovers()
                got = exporter.try_lease(holder)
                if not isinstance(got, (Busy, Unanswered)):
                    return got
                if time.monotonic() >= deadline:
                    raise ClaimError(f"waited {timeout:g} s for place {exporter.name}'s exporter: {got}")
                if str(got) != said:
                    busy.append(exporter.name)
                    notify(f"place {exporter.name} acquired; its exporter is {got}: waiting")
                    said = str(got)
                wait_for_handover(seen, min(0.2, max(0.0, deadline - time.monotonic())))
        except BaseException:
            if said:
                exporter.stop_waiting()
            raise

    def _take_back_stale(self, session: Session, groups: list[Group], notify: Callable[[str], None]) -> None:
        """Release fitting places whose holder of ours has died (labgrid_stale.py)."""
        names = list(dict.fromkeys(name for group in groups for name in fitting(session, group)))

        def exporters_of(name: str) -> list[PlaceExporter]:
            return self._place_exporters(session, name)

        self.notes += self._stale.take_back(session, names, exporters_of, notify)

    def give_back(self, places: list[str]) -> None:
        """Release places at the end of a claim (a coordinator that forgot them, by a restart, is fine)."""
        for place in places:
            try:
                self._live().release(place, holder=self.session.name if self.session else None)
            except CoordinatorError as exc:
                print(f"jumpstarter: giving back place {place}: {exc}", file=sys.stderr)

    def close(self) -> None:
        for exporter in self._exporters.values():
            if exporter._root is not None:
                stop_waiting(exporter._root.connection)
            exporter.close()
        self._exporters = {}
        if self.session is not None:
            self.session.close()
            self.session = None


def _quietly(call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except CoordinatorError:
        pass


def load(values: Any, passphrase: str | None, tls: TLS, worker: str | None) -> tuple[list[Exporter], LabgridPool]:
    """The pool of ``--lab``, and an exporter per place that has one now (for the export fixtures): a usage error
    naming the coordinator's address when it can't be reached."""
    where = f"--lab {values['lab']} ({values.sources['lab']})"
    if values["exporters"]:
        raise pytest.UsageError(f"jumpstarter: {where} and --exporter: use one or the other")
    try:
        address = parse_url(values["lab"])
    except ValueError as exc:
        raise pytest.UsageError(f"jumpstarter: {where}: {exc}") from None
    tags: dict[str, str] = {}
    for item in values["lab_tags"]:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise board.BoardError(f"{item!r} is not KEY=VALUE")
            board.check_tag(key, value, item)
        except board.BoardError as exc:
            raise pytest.UsageError(f"jumpstarter: --lab-tag ({values.sources['lab_tags']}): {exc}") from None
        tags[key] = value
    try:
        priority = float(values["lab_priority"])
    except ValueError:
        raise pytest.UsageError(
            f"jumpstarter: --lab-priority {values['lab_priority']!r} ({values.sources['lab_priority']}) is not a number"
        ) from None
    try:
        pool = LabgridPool(address, passphrase, tls, tags, priority, role=f"pytest {worker or ''}".strip())
    except CoordinatorError as exc:
        raise pytest.UsageError(f"jumpstarter: {where}: {exc}") from None
    return list(pool.boards()), pool
