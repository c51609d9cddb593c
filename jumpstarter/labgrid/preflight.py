"""Before an exporter publishes: what in the lab would make its publishing wrong, not just early.

Each is an error the exporter stops on at start, naming the problem: another exporter of its name published
already (the coordinator keeps the first and refuses the second for as long as both run), a shared place
(``--labgrid-place``) that someone holds acquired (labgrid changes a place's matches only while it is free),
and a shared place whose other exporters give the board other tags.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from jumpstarter.labgrid import board
from jumpstarter.labgrid.coordinator import Session


class PublishError(Exception):
    """Publishing this exporter would be wrong; the message says why and what to do."""


def matched(matches: list[tuple[str, str, str]], name: str) -> bool:
    """Whether a place's ``matches`` take the resource of exporter ``name``."""
    return any(
        fnmatchcase(name, e) and fnmatchcase(board.GROUP, g) and fnmatchcase(board.RESOURCE_CLASS, c)
        for e, g, c in matches
    )


def check(session: Session, name: str, place: str, shared: bool, labels: dict[str, str], address: str) -> None:
    """PublishError if exporter ``name`` (``labels``, serving at ``address``) can't publish into ``place``
    (shared with others or not). One of its name published at the same address is this exporter before a
    restart, which the coordinator drops once it sees that connection gone: publishing waits for that."""
    where = f"the labgrid coordinator {session.address}"
    for resource in session.resources.values():
        same = resource.params.get("address") == address
        if resource.exporter == name and resource.cls == board.RESOURCE_CLASS and not same:
            at = resource.params.get("address", "?")
            raise PublishError(
                f"--labgrid: an exporter named {name!r} is published at {where} already (at {at}): the "
                "coordinator takes one exporter of a name; give this one a metadata.name of its own"
            )
    found = session.places.get(place)
    if not shared or found is None:
        return
    if found.acquired and not matched(found.matches, name):
        raise PublishError(
            f"--labgrid-place {place}: the place is acquired by {found.acquired} at {where}: an exporter joins a "
            f"place only while it is free (labgrid changes the matches of free places only); release it "
            f"(labgrid-client -p {place} release) or publish into another place"
        )
    for other in session.resources_of(found, board.RESOURCE_CLASS):
        if other.exporter == name:
            continue
        try:
            theirs = board.read(place, other.params, other.exporter).labels
        except board.BoardError:
            continue  # its own bad data: the claims say so
        differ = board.disagreement(labels, theirs)
        if differ:
            raise PublishError(
                f"--labgrid-place {place}: its exporter {other.exporter} gives the board other tags ({differ}, "
                "this exporter's first): the exporters of one board must agree on its labels"
            )
