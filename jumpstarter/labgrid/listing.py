"""``jumpstarter lab labgrid://HOST:PORT``: the lab's places, their tags and holders, and our exporters' state.

The coordinator says who holds a place; the exporter says who holds its lease (the lock). Both are shown, so
that a place held by someone whose exporter is free (a dead holder) stands out. A place of several exporters
(a board's parts served from several hosts) gets a line for each, and one for each match none publishes now.
"""

from __future__ import annotations

from jumpstarter.client.connection import Connection
from jumpstarter.client.lease import lease_records
from jumpstarter.common.wire import when
from jumpstarter.errors import JumpstarterError
from jumpstarter.labgrid import board
from jumpstarter.labgrid.coordinator import Place, Resource, Session

EXPORTER_TIMEOUT = 3.0  # seconds an exporter has to answer, so that one down host can't stall the listing


def exporter_lines(session: Session, place: Place, passphrase: str | None) -> list[str]:
    """A line for each exporter of ours on ``place``: what it says, or why there is none."""
    resources = sorted(session.resources_of(place, board.RESOURCE_CLASS), key=lambda r: (r.exporter, r.group))
    unfilled = session.unfilled(place, board.RESOURCE_CLASS)
    if not resources:
        return ["    exporter: no exporter of ours published"]
    if len(resources) == 1 and not unfilled:
        return [f"    exporter: {exporter_state(place, resources[0], passphrase)}"]
    lines = [f"    exporter {r.exporter}: {exporter_state(place, r, passphrase)}" for r in resources]
    return lines + [f"    exporter {match.split('/')[0]}: not published" for match in unfilled]


def exporter_state(place: Place, resource: Resource, passphrase: str | None) -> str:
    """What an exporter of ours on ``place`` says: free, leased by whom, unreachable; or what is wrong with it."""
    try:
        found = board.read(place.name, resource.params, resource.exporter)
    except board.BoardError as exc:
        return f"bad resource: {exc}"
    connection = Connection(found.address, passphrase, tls=found.tls)
    try:
        connection.report(EXPORTER_TIMEOUT)
        held = [r for r in lease_records(connection) if r.released == 0]
    except (JumpstarterError, OSError) as exc:
        return f"{found.address}: unreachable ({exc})"
    finally:
        connection.close()
    if held:
        return f"{found.address}: leased by {held[-1].holder} since {when(held[-1].granted)}"
    return f"{found.address}: free"


def lines(address: str, passphrase: str | None) -> list[str]:
    """A block per place, sorted by name."""
    out = []
    with Session(address, role="lab listing") as session:
        places = sorted(session.places.values(), key=lambda p: p.name)
        for place in places:
            tags = ", ".join(f"{k}={v}" for k, v in sorted(place.tags.items())) or "no tags"
            holder = f"held by {place.acquired}" if place.acquired else "free"
            if place.reservation and not place.acquired:
                holder = "reserved"
            out.append(f"{place.name}  [{tags}]  {holder}")
            out += exporter_lines(session, place, passphrase)
        out.append(f"{len(places)} place{'s' if len(places) != 1 else ''} at the labgrid coordinator {address}")
    return out
