"""The lab's directory as a claim reads it: a place's exporters of ours, and a client for each.

A place names its exporters through ``JumpstarterExporter`` resources (jumpstarter/labgrid/board.py): usually
one, or several for a board whose parts are served by several exporters (its power from one host, its serial
console from another; see docs/lab.md). Reading them checks the data (a clear BoardError naming the place),
and ``PlaceExporter`` reaches each with the run's passphrase, as an ``--exporter`` address would be. Every
exporter of a place carries the place's name: the place is the board, for the run's records and retries.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from jumpstarter.client.connection import TLS
from jumpstarter.labgrid import board
from jumpstarter.labgrid.coordinator import Session
from pytest_jumpstarter.exporters import Exporter


class PlaceExporter(Exporter):
    """An exporter a place's JumpstarterExporter resource names, reached with the run's passphrase."""

    def __init__(self, found: board.Board, passphrase: str | None, tls: TLS) -> None:
        super().__init__(found.address, passphrase, (tls or True) if found.tls else False)
        self.board = found
        self.keep = False  # the place goes back to the lab's queue after each claim: so does the exporter
        self.name, self.exports, self.labels = found.place, list(found.exports), dict(found.labels)

    def describe(self) -> str:
        shared = self.board.exporter not in ("", self.name)  # one of a place's several exporters
        return f"place {self.name} ({f'{self.board.exporter} at ' if shared else ''}{self.spec})"

    def handoff(self) -> dict[str, Any]:
        return {}  # workers read the lab themselves


def read_boards(session: Session, name: str) -> list[board.Board]:
    """The exporters of place ``name``, from its resources, by exporter name; BoardError naming what is wrong."""
    place = session.places.get(name)
    if place is None:
        raise board.BoardError(f"place {name!r} no longer exists")
    resources = sorted(session.resources_of(place, board.RESOURCE_CLASS), key=lambda r: (r.exporter, r.group))
    if not resources:
        raise board.Unpublished(
            f"place {name!r} has no {board.RESOURCE_CLASS} resource: its exporter is not published (stopped?)"
        )
    found = [board.read(name, r.params, r.exporter) for r in resources]
    for first, second in combinations(found, 2):  # published at once, neither saw the other (publish.py checks)
        differ = board.disagreement(first.labels, second.labels)
        if differ:
            raise board.BoardError(
                f"place {name!r}: its exporters {first.exporter} and {second.exporter} disagree on its tags "
                f"({differ}): a test couldn't tell which the board is"
            )
    served: dict[str, str] = {}
    for exporter in found:
        for export in exporter.exports:
            other = served.setdefault(export, exporter.exporter)
            if other != exporter.exporter:
                raise board.BoardError(
                    f"place {name!r}: its exporters {other} and {exporter.exporter} both have export {export!r}: "
                    "a test couldn't tell which to use"
                )
    return found


def exports_of(boards: list[board.Board]) -> list[str]:
    return [export for found in boards for export in found.exports]
