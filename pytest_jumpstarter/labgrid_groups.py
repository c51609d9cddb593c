"""Which places can serve a claim: its exports grouped by the tags their place must carry.

Exports with the same labels share a place when one place can serve them all, else each gets its own (named,
when only one place can serve it); the ``exporter`` fixture alone rides along with the others. A place fits a
group when it carries every tag (``name`` is the place's own name, as labgrid's reservations take it).
"""

from __future__ import annotations

from dataclasses import dataclass

from jumpstarter.labgrid import board
from jumpstarter.labgrid.coordinator import Session
from pytest_jumpstarter.labgrid_places import exports_of, read_boards
from pytest_jumpstarter.pool import ClaimError, Needs, _labels


@dataclass
class Group:
    """Exports that one place must provide, and the tags the place must carry."""

    exports: list[str]
    tags: dict[str, str]
    token: str = ""
    avoid: frozenset[str] = frozenset()  # places to pass over: the test failed there (--jumpstarter-retry-elsewhere)

    def __str__(self) -> str:
        what = f"export {', '.join(map(repr, self.exports))}" if self.exports else "a place"
        return what + (f" with {_labels(self.tags)}" if self.tags else "")


def group_needs(
    session: Session, needs: Needs, tags: dict[str, str], pinned: str | None, avoid: frozenset[str] = frozenset()
) -> list[Group]:
    """A place per set of labels, if one place can serve all its exports, else a place per export (named when
    only one place can serve it); ``exporter`` alone (None) rides along with the others. None of them one of
    the places in ``avoid``."""
    by_tags: dict[tuple, Group] = {}
    for export, labels in needs.items():
        if export is None and len(needs) > 1:
            continue
        wanted = {**tags, **labels}
        for key, value in labels.items():
            try:
                board.check_tag(key, value, f"@pytest.mark.exporter label {key}={value}")
            except board.BoardError as exc:
                raise ClaimError(str(exc)) from None
        if pinned is not None:
            wanted["name"] = pinned
        group = by_tags.setdefault(tuple(sorted(wanted.items())), Group([], wanted, avoid=avoid))
        if export is not None:
            group.exports.append(export)
    found: list[Group] = []
    for group in by_tags.values():
        if len(group.exports) < 2 or providers(session, group):
            found.append(group)
            continue
        for export in group.exports:
            single = Group([export], dict(group.tags), avoid=avoid)
            serving = providers(session, single)
            if len(serving) == 1 and "name" not in single.tags:
                single.tags["name"] = serving[0]
            found.append(single)
    return found


def providers(session: Session, group: Group) -> list[str]:
    """The fitting places whose exporters have every export of ``group``, but those it avoids."""
    found = []
    for name in fitting(session, group):
        if name in group.avoid:
            continue
        try:
            exports = exports_of(read_boards(session, name))
        except board.BoardError:
            continue
        if all(e in exports for e in group.exports):
            found.append(name)
    return found


def fitting(session: Session, group: Group) -> list[str]:
    return [p.name for p in session.places.values() if carries(p.tags, p.name, group.tags)]


def carries(tags: dict[str, str], name: str, wanted: dict[str, str]) -> bool:
    return all((name if key == "name" else tags.get(key)) == value for key, value in wanted.items())


def no_place(session: Session, address: str, group: Group, yet: bool = False) -> str:
    listing = "; ".join(
        f"{p.name} ({_labels(p.tags) or 'no tags'})" for p in sorted(session.places.values(), key=lambda p: p.name)
    )
    carries = f"carries {_labels(group.tags)}" + (" yet" if yet else "")
    return f"no place of the labgrid lab at {address} {carries} (places: {listing or 'none'})"


def holders(session: Session, groups: list[Group], waited: dict[str, None]) -> str:
    """Who holds the places that fit, for the waiting line."""
    parts = []
    for group in groups:
        for name in fitting(session, group):
            place = session.places[name]
            if place.acquired:
                parts.append(f"{name} held by {place.acquired}")
                waited[name] = None
            elif place.reservation and place.reservation != group.token:
                parts.append(f"{name} reserved for another claim")
                waited[name] = None
    return "; ".join(dict.fromkeys(parts)) or "the coordinator has not allocated a place yet"
