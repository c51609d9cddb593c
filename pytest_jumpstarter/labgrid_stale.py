"""Taking back places whose holder of ours died: labgrid's coordinator would keep them held for ever.

It knows a holder only by the name it declared. Ours end in MARK and hold their place's exporter lease for as
long as they hold the place; the lease ends with the holder's connection. So a place seen held by the same
holder of ours for STALE_AFTER s while its exporter holds no lease has a dead holder: a waiter releases it.
Places held by other labgrid users are never taken back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from jumpstarter.client.lease import lease_records
from jumpstarter.errors import JumpstarterError
from jumpstarter.labgrid import board
from jumpstarter.labgrid.coordinator import MARK, CoordinatorError, Session
from pytest_jumpstarter.labgrid_places import PlaceExporter

STALE_AFTER = 5.0  # seconds a place held by a holder of ours without its exporter's lease is taken as abandoned


class StaleHolders:
    """Remembers since when each (place, holder) was seen held, and releases the abandoned ones."""

    def __init__(self) -> None:
        self.held_since: dict[tuple[str, str], float] = {}  # (place, holder) -> when first seen held

    def take_back(
        self,
        session: Session,
        names: list[str],
        exporters_of: Callable[[str], list[PlaceExporter]],
        notify: Callable[[str], None],
    ) -> list[str]:
        """Release those of places ``names`` whose holder of ours has died; the lines said about them."""
        said = []
        now = time.monotonic()
        for name in names:
            place = session.places[name]
            if not place.acquired.endswith(MARK) or place.acquired == session.name:
                continue
            since = self.held_since.setdefault((name, place.acquired), now)
            if now - since < STALE_AFTER:
                continue
            try:
                records = [r for e in exporters_of(name) for r in lease_records(e.client().connection)]
            except (board.BoardError, JumpstarterError, OSError):
                continue
            if any(r.released == 0 for r in records):
                continue  # its holder still holds an exporter of it: alive
            try:
                session.release(name, place.acquired)
            except CoordinatorError:
                pass
            self.held_since.pop((name, place.acquired), None)
            line = (
                f"place {name} was held by {place.acquired}, which has held no lease of its exporter for "
                f"{now - since:.0f} s (it died?): released it"
            )
            said.append(line)
            notify(line)
        return said
