"""Upstream's ``ref:`` proxies: an entry ``serial: {ref: "storage.serial"}`` makes the driver at that path
reachable under a second one. Here a ref is resolved once, when the YAML is read, to the entry it names; the
loader then puts the same driver instance under both paths (one driver, one lease, closed once).

A ref names a path from the top of the tree it is in (the ``export:`` entries), as upstream's ``Proxy`` walks
from its root. A ref to a missing path, to itself, or to a driver that contains it (so that making one needs
the other first) is a ConfigError naming the file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from jumpstarter.errors import ConfigError

if TYPE_CHECKING:
    from jumpstarter.config.loader import DriverEntry


def walk(entries: dict[str, DriverEntry]) -> Iterator[DriverEntry]:
    """Every entry of the tree, parents before children."""
    for entry in entries.values():
        yield entry
        yield from walk(entry.children)


def resolve(entries: dict[str, DriverEntry], source: str) -> None:
    """Set ``entry.target`` of every ref entry of the tree to the (non-ref) entry it stands for; ConfigError
    for a ref that names nothing, or that would make a driver contain itself."""

    def error(entry: DriverEntry, message: str) -> ConfigError:
        return ConfigError(f"{source}:{entry.line}: export {entry.path!r}: {message}")

    def follow(entry: DriverEntry, chain: list[str]) -> DriverEntry:
        assert entry.ref is not None
        if entry.path in chain:
            loop = " -> ".join([*chain[chain.index(entry.path) :], entry.path])
            raise error(entry, f"ref {entry.ref!r} makes a cycle of refs ({loop})")
        node: DriverEntry | None = None
        level, walked = entries, list[str]()
        for step in entry.ref.split("."):
            node = level.get(step)
            if node is None:
                there = f"below {'.'.join(walked)!r}" if walked else "at the top of 'export'"
                names = ", ".join(repr(n) for n in level) or "none"
                raise error(entry, f"ref {entry.ref!r}: no driver {step!r} {there} (there: {names})")
            walked.append(step)
            if node is entry:
                raise error(entry, f"ref {entry.ref!r} refers to itself")
            if node.ref is not None:
                node = follow(node, [*chain, entry.path])
            level = node.children
        assert node is not None
        return node

    refs = [entry for entry in walk(entries) if entry.ref is not None]
    for entry in refs:
        if not entry.ref or any(not step for step in entry.ref.split(".")):
            raise error(entry, f"ref {entry.ref!r} must be a dotted path of export names, e.g. 'board.power'")
    for entry in refs:
        entry.target = follow(entry, [])
    for entry in refs:
        _check_not_inside(entry, error)


def _check_not_inside(ref: DriverEntry, error: Callable[[DriverEntry, str], ConfigError]) -> None:
    """A ref's target is made before the driver the ref sits in; if the target holds the ref (directly, or
    through other refs), neither can be made first (upstream's exporter recurses without end there)."""
    assert ref.target is not None
    seen: set[int] = set()
    stack = [ref.target]
    while stack:
        entry = stack.pop()
        if id(entry) in seen:
            continue
        seen.add(id(entry))
        for child in entry.children.values():
            if child is ref:
                via = "" if entry is ref.target else f" (through {entry.path!r})"
                raise error(ref, f"ref {ref.ref!r} is a cycle: {ref.target.path!r} holds this ref itself{via}")
            stack.append(child.target if child.target is not None else child)
