"""Exporters from a labgrid lab (``--lab labgrid://HOST:PORT``): the coordinator queues, our exporters lock.

A claim reserves a place per group of exports (tags: the test's labels and ``--lab-tag``; ``name`` in matrix
mode), waits for the coordinator to allocate them all, acquires them, reads each place's exporter address, and
takes that exporter's lease as an ``--exporter`` claim does: the lease stays the lock (a board leased outside
the lab's queue is waited for). Places go back when the claim is released; reservations are cancelled on
every way out. A place that can't serve (no exporter published, down, bad data, lacking an export) is kept
reserved for the rest of the claim, so the coordinator allocates the next one: the test goes elsewhere.

A holder that dies keeps its place at the coordinator for ever; a waiter of ours releases such a place once it
has seen it held by the same holder of ours (their names end in MARK) for STALE_AFTER s while its exporter
holds no lease: that holder's lease session died with it.
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
from jumpstarter.client.lease import Busy, lease_records, stop_waiting, wait_for_handover
from jumpstarter.errors import ConnectError, JumpstarterError
from jumpstarter.labgrid import board
from jumpstarter.labgrid.coordinator import MARK, CoordinatorError, Session, parse_url
from pytest_jumpstarter.exporters import Exporter, Unanswered
from pytest_jumpstarter.pool import Claim, ClaimError, Needs, Pool, _labels

RETRY = 1.0  # seconds between attempts to reach a coordinator that went away
POLL = 1.0  # at most this long between polls of a reservation (the session's updates wake us sooner)
STALE_AFTER = 5.0  # seconds a place held by a holder of ours without its exporter's lease is taken as abandoned
BAD_FOR = 10.0  # seconds a place that failed (its exporter unreachable) is skipped before it is tried again
PARTIAL_HOLD = 2.0  # seconds a claim of several places keeps some while waiting for the rest (then backs off)
REPEAT_NOTICE = 30.0
RESTART_GRACE = 30.0  # seconds after reaching a coordinator again in which "no place fits" is waited out: a
# restarted coordinator may come back without the places its exporters publish again, one by one


class PlaceExporter(Exporter):
    """The exporter a place's JumpstarterExporter resource names, reached with the run's passphrase."""

    def __init__(self, found: board.Board, passphrase: str | None, tls: TLS) -> None:
        super().__init__(found.address, passphrase, (tls or True) if found.tls else False)
        self.board = found
        self.keep = False  # the place goes back to the lab's queue after each claim: so does the exporter
        self.name, self.exports, self.labels = found.place, list(found.exports), dict(found.labels)

    def describe(self) -> str:
        return f"place {self.name} ({self.spec})"

    def handoff(self) -> dict[str, Any]:
        return {}  # workers read the lab themselves


@dataclass
class PlaceClaim(Claim):
    """A claim's leases, and the places that go back to the lab with them."""

    pool: LabgridPool | None = None

    def release(self) -> None:
        super().release()
        if self.pool is not None:
            self.pool.give_back(self.places)
        self.places = []


@dataclass
class _Group:
    """Exports that one place must provide, and the tags the place must carry."""

    exports: list[str]
    tags: dict[str, str]
    token: str = ""

    def __str__(self) -> str:
        what = f"export {', '.join(map(repr, self.exports))}" if self.exports else "a place"
        return what + (f" with {_labels(self.tags)}" if self.tags else "")


class _AllUnusable(Exception):
    """Every fitting place is unusable for now (its exporter not published, or unreachable): start over."""


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
        self.opened, self.reopened = True, float("-inf")  # when the session was opened again (RESTART_GRACE)
        self._exporters: dict[str, PlaceExporter] = {}  # by place name, kept across claims (their connections)
        self._bad: dict[str, tuple[float, str]] = {}  # place -> (monotonic, why): skipped for BAD_FOR s
        self._held_since: dict[tuple[str, str], float] = {}  # (place, holder) -> when first seen held
        self.notes: list[str] = []  # lines for the run's end (say what we took back)
        self._transient = False

    # -- the directory --------------------------------------------------------------------------------------------

    def boards(self) -> list[PlaceExporter]:
        """An exporter for each place that has a good JumpstarterExporter resource now (for the fixtures)."""
        session = self._live()
        found = []
        for place in sorted(session.places.values(), key=lambda p: p.name):
            try:
                found.append(self._exporter(self._board(session, place.name)))
            except board.BoardError:
                continue
        return found

    def _board(self, session: Session, name: str) -> board.Board:
        place = session.places.get(name)
        if place is None:
            raise board.BoardError(f"place {name!r} no longer exists")
        resources = session.resources_of(place, board.RESOURCE_CLASS)
        if not resources:
            raise board.Unpublished(
                f"place {name!r} has no {board.RESOURCE_CLASS} resource: its exporter is not published (stopped?)"
            )
        if len(resources) > 1:
            where = ", ".join(f"{r.exporter}/{r.group}" for r in resources)
            raise board.BoardError(
                f"place {name!r} matches {len(resources)} {board.RESOURCE_CLASS} resources ({where})"
            )
        return board.read(name, resources[0].params)

    def _exporter(self, found: board.Board) -> PlaceExporter:
        exporter = self._exporters.get(found.place)
        if exporter is None or exporter.board != found:
            if exporter is not None:
                exporter.close()
            exporter = self._exporters[found.place] = PlaceExporter(found, self.passphrase, self.tls)
        return exporter

    def _live(self) -> Session:
        """The session, opened again when the coordinator went away (CoordinatorError while it is away)."""
        if self.session is not None and self.session.broken:
            self.session.close()
            self.session = None
        if self.session is None:
            if self.opened:
                self.reopened = time.monotonic()
            self.session = Session(self.address, role=self.role)
            self.opened = True
        return self.session

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
        if avoid:  # the coordinator picks places by tags: it can't be told which ones to pass over
            raise ClaimError(
                f"can't retry on a board other than {', '.join(sorted(avoid))} through a labgrid lab (--lab): "
                "--jumpstarter-retry-elsewhere works with --exporter only, for now"
            )
        deadline = time.monotonic() + timeout
        waited: dict[str, None] = {}
        said = ""
        while True:
            try:
                claim = self._claim(self._groups(needs, pinned), holder, deadline, timeout, notify, waited)
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

    def _groups(self, needs: Needs, pinned: str | None) -> list[_Group]:
        """A place per set of labels, if one place can serve all its exports, else a place per export (named when
        only one place can serve it); ``exporter`` alone (None) rides along with the others."""
        by_tags: dict[tuple, _Group] = {}
        for export, labels in needs.items():
            if export is None and len(needs) > 1:
                continue
            tags = {**self.tags, **labels}
            for key, value in labels.items():
                try:
                    board.check_tag(key, value, f"@pytest.mark.exporter label {key}={value}")
                except board.BoardError as exc:
                    raise ClaimError(str(exc)) from None
            if pinned is not None:
                tags["name"] = pinned
            group = by_tags.setdefault(tuple(sorted(tags.items())), _Group([], tags))
            if export is not None:
                group.exports.append(export)
        session = self._live()
        groups: list[_Group] = []
        for group in by_tags.values():
            if len(group.exports) < 2 or self._providers(session, group):
                groups.append(group)
                continue
            for export in group.exports:
                single = _Group([export], dict(group.tags))
                providers = self._providers(session, single)
                if len(providers) == 1 and "name" not in single.tags:
                    single.tags["name"] = providers[0]
                groups.append(single)
        return groups

    def _providers(self, session: Session, group: _Group) -> list[str]:
        """The fitting places whose exporter has every export of ``group``."""
        found = []
        for name in self._fitting(session, group):
            try:
                exports = self._board(session, name).exports
            except board.BoardError:
                continue
            if all(e in exports for e in group.exports):
                found.append(name)
        return found

    def _claim(
        self,
        groups: list[_Group],
        holder: str,
        deadline: float,
        timeout: float,
        notify: Callable[[str], None],
        waited: dict[str, None],
    ) -> PlaceClaim:
        session = self._live()
        for group in groups:
            if not self._fitting(session, group):
                if time.monotonic() - self.reopened < RESTART_GRACE:
                    raise _AllUnusable(self._no_place(session, group) + ", just after the coordinator came back")
                raise ClaimError(self._no_place(session, group))
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
                why = self._holders(session, groups, waited)
                if now >= deadline:
                    raise ClaimError(f"waited {timeout:g} s for {' and '.join(map(str, groups))}: {why}")
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

    def _fitting(self, session: Session, group: _Group) -> list[str]:
        return [p.name for p in session.places.values() if _carries(p.tags, p.name, group.tags)]

    def _no_place(self, session: Session, group: _Group) -> str:
        listing = "; ".join(
            f"{p.name} ({_labels(p.tags) or 'no tags'})" for p in sorted(session.places.values(), key=lambda p: p.name)
        )
        return (
            f"no place of the labgrid lab at {self.address} carries {_labels(group.tags)} (places: {listing or 'none'})"
        )

    def _skip_bad(
        self,
        session: Session,
        groups: list[_Group],
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
            if not [p for p in self._fitting(session, group) if p not in held]:
                if transient or self._transient:
                    raise _AllUnusable(f"no place can serve {group} now: {why}")
                raise ClaimError(f"no place left for {group}: {why}")
            self._transient = self._transient or transient
            group.token = session.reserve(group.tags, self.priority)
        return skipped

    def _parked_places(self, session: Session, parked: list[str]) -> set[str]:
        return {p.name for p in session.places.values() if p.reservation in parked}

    def _unusable(self, session: Session, place: str, group: _Group) -> tuple[str, bool] | None:
        """Why ``place`` can't serve ``group`` and whether that may pass, or None if it can."""
        bad = self._bad.get(place)
        if bad is not None and time.monotonic() - bad[0] < BAD_FOR:
            return bad[1], True
        try:
            found = self._board(session, place)
        except board.BoardError as exc:
            return str(exc), exc.transient
        missing = [e for e in group.exports if e not in found.exports]
        if missing:
            has = ", ".join(found.exports)
            return f"its exporter has no export {', '.join(map(repr, missing))} (it has: {has})", False
        return None

    def _take(
        self,
        session: Session,
        groups: list[_Group],
        allocated: dict[int, str | None],
        holder: str,
        deadline: float,
        timeout: float,
        notify: Callable[[str], None],
        waited: dict[str, None],
    ) -> PlaceClaim | None:
        """Acquire every allocated place and lease its exporter; None (all given back) if one failed."""
        claim = PlaceClaim({}, pool=self)
        busy: list[str] = []  # places whose exporter was leased outside the lab's queue: waited for
        try:
            for group in groups:
                place = allocated[id(group)]
                assert place is not None
                exporter = self._exporter(self._board(session, place))
                try:
                    session.acquire(place)
                except CoordinatorError as exc:
                    if exc.unreachable:
                        raise
                    self._bad[place] = (time.monotonic(), str(exc))
                    claim.release()
                    return None
                claim.places.append(place)
                try:
                    claim.leases[exporter] = self._lease(exporter, holder, deadline, timeout, notify, busy)
                except ConnectError as exc:
                    self._bad[place] = (time.monotonic(), f"its exporter can't be reached: {exc}")
                    notify(f"skipping place {place}: its exporter can't be reached: {exc}")
                    claim.release()
                    return None
                exports: list[str | None] = [*group.exports] or [None]
                for export in exports:
                    claim.chosen[export] = exporter
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

    def _holders(self, session: Session, groups: list[_Group], waited: dict[str, None]) -> str:
        """Who holds the places that fit, for the waiting line."""
        parts = []
        for group in groups:
            for name in self._fitting(session, group):
                place = session.places[name]
                if place.acquired:
                    parts.append(f"{name} held by {place.acquired}")
                    waited[name] = None
                elif place.reservation and place.reservation != group.token:
                    parts.append(f"{name} reserved for another claim")
                    waited[name] = None
        return "; ".join(dict.fromkeys(parts)) or "the coordinator has not allocated a place yet"

    def _take_back_stale(self, session: Session, groups: list[_Group], notify: Callable[[str], None]) -> None:
        """Release fitting places whose holder of ours has died (see the module's docstring)."""
        now = time.monotonic()
        for group in groups:
            for name in self._fitting(session, group):
                place = session.places[name]
                if not place.acquired.endswith(MARK) or place.acquired == session.name:
                    continue
                since = self._held_since.setdefault((name, place.acquired), now)
                if now - since < STALE_AFTER:
                    continue
                try:
                    exporter = self._exporter(self._board(session, name))
                    records = lease_records(exporter.client().connection)
                except (board.BoardError, JumpstarterError, OSError):
                    continue
                if any(r.released == 0 for r in records):
                    continue  # its holder still holds the exporter: alive
                _quietly(session.release, name, place.acquired)
                self._held_since.pop((name, place.acquired), None)
                line = (
                    f"place {name} was held by {place.acquired}, which has held no lease of its exporter for "
                    f"{now - since:.0f} s (it died?): released it"
                )
                self.notes.append(line)
                notify(line)

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


def _carries(tags: dict[str, str], name: str, wanted: dict[str, str]) -> bool:
    return all((name if key == "name" else tags.get(key)) == value for key, value in wanted.items())


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
