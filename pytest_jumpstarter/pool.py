"""Which exporters a test gets: ones that provide its exports, match its labels, and are free.

A claim takes every lease a test needs at once or none at all: when one
exporter is busy, the leases already taken are given back before waiting, so
two tests that each need two boards can't hold one each and wait forever.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jumpstarter.client.lease import Busy, HookFailed, Lease, handovers, wait_for_handover
from jumpstarter.errors import ConnectError
from pytest_jumpstarter.exporters import Exporter, Unanswered

# export name (None: any exporter, for the `exporter` fixture alone) -> labels the exporter must carry
Needs = dict[str | None, dict[str, str]]

FIRST_DELAY, MAX_DELAY = 0.005, 0.05  # seconds between attempts while waiting: doubling, with jitter. An exporter
# of ours hands a freed board to its longest waiter and tells it, which wakes it at once; another (upstream's,
# with a lock file) sits idle up to MAX_DELAY before the next test takes it. An attempt costs one small RPC.
REPEAT_NOTICE = 30.0  # while waiting, repeat who holds what this often


class ClaimError(Exception):
    """No exporter can serve the claim: none fits, all are gone, the wait timed out, or a hook failed."""

    waited_for: tuple[str, ...] = ()  # the exporters it found busy meanwhile
    hooks: tuple[tuple[str, Any], ...] = ()  # (exporter, its failed hook's run)
    # Through a lab (--lab): seconds it queued at the coordinator before it gave up, and the places held meanwhile
    queued: float = 0.0
    queued_behind: tuple[str, ...] = ()


@dataclass
class Claim:
    """The exporters a test (or module, or session) holds: export name -> exporter, and their leases."""

    chosen: dict[str | None, Exporter]
    leases: dict[Exporter, Lease] = field(default_factory=dict)
    waited_for: tuple[str, ...] = ()  # the exporters it found busy before it got these (the timeline's)
    # Through a lab (--lab): seconds its places queued at the coordinator before they were allocated, the places
    # it got, and those it found held or reserved meanwhile (the timeline's too; waited_for: exporters found leased)
    queued: float = 0.0
    places: list[str] = field(default_factory=list)
    queued_behind: tuple[str, ...] = ()

    @property
    def hooks(self) -> list[tuple[str, Any]]:
        """(exporter name, HookRun): the exporters' hooks its leases waited for (jumpstarter.exporter.holders)."""
        return [(e.name, run) for e, lease in self.leases.items() for run in lease.hooks]

    @property
    def first(self) -> Exporter:
        return next(iter(self.chosen.values()))

    def release(self) -> None:
        for lease in self.leases.values():
            lease.release()
        self.leases = {}


class Pool:
    """The session's exporters, handed out under exclusive leases."""

    def __init__(self, exporters: list[Exporter], offset: int = 0) -> None:
        self.exporters = exporters
        self.offset = offset  # where each xdist worker starts looking, so that workers spread out
        self.avoid: frozenset[str] = frozenset()  # boards kept out (--jumpstarter-quarantine) while others fit
        # The run's health checks (health.py) set these: boards out of the run and why; why to pass one by for now.
        self.removed: Callable[[], dict[str, str]] = dict
        self.passby: Callable[[str], str | None] = lambda name: None

    def candidates(
        self, export: str | None, labels: dict[str, str], pinned: str | None = None, avoid: frozenset[str] = frozenset()
    ) -> list[Exporter]:
        found = [
            e
            for e in self.exporters
            if e.provides(export) and e.matches(labels) and pinned in (None, e.name) and e.name not in avoid
        ]
        if not found:
            return []
        if self.avoid:  # a quarantined board serves when no other (alive) one fits
            found = [e for e in found if e.name not in self.avoid and e.failure() is None] or found
        start = self.offset % len(found)
        return found[start:] + found[:start]

    def targets(self, needs: Needs) -> list[str]:
        """The boards a test with ``needs`` runs on, once on each, in matrix mode (and a health check): every one
        that fits it, but the quarantined ones unless no other fits."""
        names = [e.name for e in self.exporters if all(e.provides(x) and e.matches(lb) for x, lb in needs.items())]
        return [n for n in names if n not in self.avoid] or names

    def claim(
        self,
        needs: Needs,
        holder: str,
        timeout: float,
        pinned: str | None = None,
        notify: Callable[[str], None] = lambda text: None,
        avoid: frozenset[str] = frozenset(),
    ) -> Claim:
        """Lease exporters for every need, none of those in ``avoid``; wait up to ``timeout`` s for busy ones, then
        ClaimError."""
        for export, labels in needs.items():
            if not self.candidates(export, labels, pinned, avoid):
                raise ClaimError(self._no_fit(export, labels, pinned, avoid))
        refused: dict[Exporter, None] = {}  # they count it as waiting for them until told it no longer is
        claim = None
        try:
            claim = self._wait(needs, holder, timeout, pinned, notify, refused, avoid)
            return claim
        finally:
            for exporter in refused:
                if claim is None or exporter not in claim.leases:
                    exporter.stop_waiting()

    def _wait(
        self,
        needs: Needs,
        holder: str,
        timeout: float,
        pinned: str | None,
        notify: Callable[[str], None],
        refused: dict[Exporter, None],
        avoid: frozenset[str],
    ) -> Claim:
        started = time.monotonic()
        delay, last_notice, last_busy = FIRST_DELAY, 0.0, ""
        blocked: dict[Exporter, None] = {}  # those found busy on the passes that got nothing: waited for
        while True:
            seen = handovers()
            claim, busy = self._attempt(needs, holder, pinned, avoid)
            refused.update(dict.fromkeys(busy))
            if claim is not None:
                claim.waited_for = tuple(e.name for e in blocked)
                return claim
            blocked.update(dict.fromkeys(busy))
            waited = time.monotonic() - started
            why = "; ".join(f"{e.name} {b}" for e, b in busy.items())
            if waited >= timeout:
                error = ClaimError(f"waited {timeout:g} s for {self._wanted(needs)}: {why}")
                error.waited_for = tuple(e.name for e in blocked)
                raise error
            if why != last_busy or waited - last_notice >= REPEAT_NOTICE:
                notify(f"waiting for {self._wanted(needs)}: {why}")
                last_busy, last_notice = why, waited
            # Woken early when an exporter is handed to us (ours tell whom they hand a freed one to).
            wait_for_handover(seen, min(delay * random.uniform(0.5, 1.5), max(0.0, timeout - waited)))
            delay = min(delay * 2, MAX_DELAY)

    def _attempt(
        self, needs: Needs, holder: str, pinned: str | None, avoid: frozenset[str] = frozenset()
    ) -> tuple[Claim | None, dict]:
        """One pass over the candidates: every lease, or none (and who is in the way)."""
        claim, busy = Claim({}), dict[Exporter, object]()
        removed = self.removed()
        # Named exports first, in a fixed order; "any exporter" last, so it can reuse one already taken.
        for export in sorted(needs, key=lambda name: (name is None, name or "")):
            labels = needs[export]
            taken = next((e for e in claim.leases if e.provides(export) and e.matches(labels)), None)
            if taken is not None:
                claim.chosen[export] = taken
                continue
            fitting = self.candidates(export, labels, pinned, avoid)
            alive = [e for e in fitting if e.failure() is None and e.name not in removed]
            if not alive:
                claim.release()
                gone = "; ".join(e.failure() or f"{e.name} is out of the run: {removed[e.name]}" for e in fitting)
                raise ClaimError(f"no exporter left for {self._wanted({export: labels})}: {gone}")
            for exporter in alive:
                why = self.passby(exporter.name)
                if why is not None:
                    busy[exporter] = why
                    continue
                try:
                    got = exporter.try_lease(holder)
                except ConnectError:
                    continue  # it is marked gone now; the next pass fails if nothing else remains
                except HookFailed as exc:  # its beforeLease hook failed for this claim: the claim fails
                    claim.release()
                    error = ClaimError(f"exporter {exporter.name}: {exc}")
                    error.hooks = ((exporter.name, exc.run),)
                    raise error from None
                if isinstance(got, (Busy, Unanswered)):  # busy, or not answering again yet: waited for
                    busy[exporter] = got
                    continue
                claim.leases[exporter] = got
                claim.chosen[export] = exporter
                break
            else:
                if not busy:  # every candidate went away during this pass: say so on the next one
                    claim.release()
                    return self._attempt(needs, holder, pinned, avoid)
                claim.release()
                return None, busy
        return claim, busy

    def _wanted(self, needs: Needs) -> str:
        parts = []
        for export, labels in needs.items():
            what = f"export {export!r}" if export else "an exporter"
            parts.append(what + (f" with {_labels(labels)}" if labels else ""))
        return " and ".join(parts)

    def _no_fit(
        self, export: str | None, labels: dict[str, str], pinned: str | None, avoid: frozenset[str] = frozenset()
    ) -> str:
        wanted = self._wanted({export: labels}) + (f" on exporter {pinned!r}" if pinned else "")
        wanted += f" other than {', '.join(sorted(avoid))}" if avoid else ""
        listing = "; ".join(
            f"{e.name} ({_labels(e.labels) or 'no labels'}): {', '.join(e.exports)}" for e in self.exporters
        )
        return f"no exporter provides {wanted} (exporters: {listing or 'none'})"


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items())
