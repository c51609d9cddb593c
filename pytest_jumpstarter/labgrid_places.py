"""The lab's directory as a claim reads it: a place's exporter of ours, and a client for it.

A place names its exporter through a ``JumpstarterExporter`` resource (jumpstarter/labgrid/board.py); reading
it checks the data (a clear BoardError naming the place), and ``PlaceExporter`` reaches that exporter with the
run's passphrase, as an ``--exporter`` address would be.
"""

from __future__ import annotations

from typing import Any

from jumpstarter.client.connection import TLS
from jumpstarter.labgrid import board
from jumpstarter.labgrid.coordinator import Session
from pytest_jumpstarter.exporters import Exporter


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


def read_board(session: Session, name: str) -> board.Board:
    """The exporter of place ``name``, from its resource; BoardError naming what is wrong."""
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
        raise board.BoardError(f"place {name!r} matches {len(resources)} {board.RESOURCE_CLASS} resources ({where})")
    return board.read(name, resources[0].params)
