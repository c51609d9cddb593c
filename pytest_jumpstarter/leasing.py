"""Which exporters a test gets, and holding them for it: the leases of a fixture scope.

A test (or a module or the session, with ``--lease-scope``) takes the leases of every export it uses
at once, from exporters that provide them and carry the labels of its ``@pytest.mark.exporter``
markers; they are given back when the scope ends. ``env()`` without a shell around leases an exporter
of the run the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from pytest_jumpstarter import hookruns
from pytest_jumpstarter.mock import MOCK_MARKER
from pytest_jumpstarter.records import LeaseRecord
from pytest_jumpstarter.reporting import EXPORTER_PROPERTY

if TYPE_CHECKING:
    from pytest_jumpstarter.lab import Lab
    from pytest_jumpstarter.pool import Claim

MARKER = "exporter"  # @pytest.mark.exporter(*exports, **labels)
ROOT = "exporter"  # the fixture of the leased exporter's root client
EXPORT_ATTRIBUTE = "_jumpstarter_export"  # on our fixtures' functions: the export's name (None: the root)
TARGET = "jumpstarter_target"  # the fixture that pins a test to one exporter (matrix mode, health checks)
CLAIMS = pytest.StashKey[dict]()  # on the node of a fixture scope: matrix target -> its Claim


@dataclass
class Preclaim:
    """A test's leases taken before its set-up (by health.py, which checks the boards first): its fixtures use
    them instead of claiming; ``error`` says why there are none."""

    claim: Claim | None
    asked: float
    error: str = ""
    waited_for: tuple[str, ...] = ()
    queued: float = 0.0  # through a lab, when it timed out in the coordinator's queue (ClaimError's)
    queued_behind: tuple[str, ...] = ()


PRECLAIM = pytest.StashKey[Preclaim]()  # on a test


class Leasing:
    def __init__(self, lab: Lab, notify: Callable[[str], None]) -> None:
        self.lab = lab
        self.notify = notify  # lease notes (waits, who holds what), for the test's report
        self.records: list[LeaseRecord] = []  # this process's claims, their waits and leases: the timeline's

    def claim(self, request: pytest.FixtureRequest, target: str | None) -> Claim:
        """The leases of this fixture scope (a test by default), taken once for all of its exports."""
        from pytest_jumpstarter.pool import ClaimError

        node = request.node
        if self.lab.pool is None:  # no exporters: the export's fixture exists because other tests mock it
            fixture = request.fixturename if request.fixturename != ROOT else None
            what = f"export {fixture!r}" if fixture else "the exporter fixture"
            pytest.fail(
                f"jumpstarter: {what} needs an exporter, and no exporter is configured (it is mocked, with "
                f"@pytest.mark.{MOCK_MARKER}, only in other tests): pass --exporter YAML|ADDRESS (or set "
                "jumpstarter_exporters / JUMPSTARTER_EXPORTERS), or mock it in this test too",
                pytrace=False,
            )
        claims = node.stash.setdefault(CLAIMS, {})
        if target in claims:
            return claims[target]
        items = [node] if isinstance(node, pytest.Item) else [i for i in node.session.items if node in i.listchain()]
        needs: dict = {}
        for item in items:
            for export, labels in self.needs_of(item).items():
                if needs.setdefault(export, labels) != labels:
                    pytest.fail(
                        f"tests under {node.nodeid} ask for export {export!r} with different labels "
                        f"({needs[export]} and {labels}); use --lease-scope function",
                        pytrace=False,
                    )
        if not needs:
            needs[None] = {}
        test = node if isinstance(node, pytest.Item) else None
        timeout = self.lab.values.seconds("lease_timeout", test)
        holder = f"{self.lab.holder}: {node.nodeid or 'session'}"
        failed = None
        record = LeaseRecord(node.nodeid, (), time.time(), worker=self.lab.workerid)
        self.records.append(record)
        pre = node.stash.get(PRECLAIM, None)
        if pre is not None:
            del node.stash[PRECLAIM]
            record.asked, record.waited_for, failed = pre.asked, pre.waited_for, pre.error or None
            record.queued, record.queued_behind = pre.queued, pre.queued_behind
            if pre.claim is not None:
                claim = pre.claim
        else:
            try:
                claim = self.lab.pool.claim(needs, holder, timeout, pinned=target, notify=self.notify)
            except ClaimError as exc:
                failed, record.waited_for = str(exc), exc.waited_for
                record.queued, record.queued_behind = exc.queued, exc.queued_behind
                record.hooks = [hookruns.record(name, run) for name, run in exc.hooks]
        if failed is not None:  # failing outside the except: no chained traceback in the report
            record.released, record.error = time.time(), failed
            pytest.fail(f"jumpstarter: {failed}", pytrace=False)
        hook = request.config.hook
        exporters = list(dict.fromkeys(claim.chosen.values()))
        record.taken, record.waited_for = time.time(), claim.waited_for
        record.queued, record.places, record.queued_behind = claim.queued, tuple(claim.places), claim.queued_behind
        record.exporters = tuple(dict.fromkeys(e.name for e in exporters))  # a place of several exporters: once
        for name, run in claim.hooks:  # the exporters' hooks it waited for: their output in the test's report
            self.notify(hookruns.note(name, run))
            record.hooks.append(hookruns.record(name, run))

        def release() -> None:
            claims.pop(target, None)
            try:
                for exporter in exporters:
                    hook.pytest_jumpstarter_lease_released(node=node, exporter=exporter)
            finally:
                claim.release()
                record.released = time.time()

        try:
            for exporter in exporters:
                hook.pytest_jumpstarter_lease_acquired(node=node, exporter=exporter)
        except BaseException:
            claim.release()
            record.released = time.time()
            raise
        claims[target] = claim
        request.addfinalizer(release)
        return claim

    def needs_of(self, item: pytest.Item | pytest.Function) -> dict[str | None, dict[str, str]]:
        """Export name -> labels for the exports ``item`` takes from exporters (None: just ``exporter``)."""
        ours = [name for name in getattr(item, "fixturenames", ()) if _is_ours(item, name)]
        mocked = {name for m in item.iter_markers(MOCK_MARKER) for name in m.kwargs}
        exports = [n for n in ours if n != ROOT and n not in mocked]
        needs = {n: self.labels(item, n) for n in exports}
        if ROOT in ours and not exports:
            needs[None] = self.labels(item, None)
        return needs

    def labels(self, item: pytest.Item, export: str | None) -> dict[str, str]:
        labels: dict[str, str] = {}
        for marker in item.iter_markers(MARKER):  # the closest marker wins
            if not marker.args or export in marker.args:
                for key, value in marker.kwargs.items():
                    labels.setdefault(key, str(value))
        return labels

    @contextmanager
    def env_lease(self) -> Iterator[Any]:
        """An exporter of this run, leased while inside: what ``env()`` gives tests when no shell is around."""
        from jumpstarter.errors import LeaseError
        from pytest_jumpstarter.pool import ClaimError

        timeout = self.lab.values.seconds("lease_timeout")
        assert self.lab.pool is not None  # set_env_fallback(env_lease) only where there are exporters
        try:
            claim = self.lab.pool.claim({None: {}}, f"{self.lab.holder}: env()", timeout, notify=self.notify)
        except ClaimError as exc:
            raise LeaseError(f"jumpstarter: env(): {exc}") from None
        try:
            yield claim.first.client()
        finally:
            claim.release()

    def pytest_runtest_call(self, item: pytest.Item) -> None:
        """junitxml and the controller's log sections learn which exporters the test used."""
        claims = [c for node in item.listchain() for c in node.stash.get(CLAIMS, {}).values()]
        used = {e.name for c in claims for e in c.chosen.values()}
        item.user_properties.extend((EXPORTER_PROPERTY, name) for name in sorted(used))


def _is_ours(item: pytest.Item | pytest.Function, name: str) -> bool:
    """Whether the fixture ``name`` that ``item`` uses is one of our export fixtures (the closest definition)."""
    definitions = fixture_definitions(item, name)
    return bool(definitions) and hasattr(definitions[-1].func, EXPORT_ATTRIBUTE)


def fixture_definitions(item: pytest.Item | pytest.Function, name: str) -> tuple[Any, ...]:
    """The definitions of fixture ``name`` visible to ``item``, closest last (empty: none).

    pytest has no public API for this. The plugin's only uses of pytest's private names are here: the
    item's ``_fixtureinfo`` (fixtures known when it was collected), then the session's ``_fixturemanager``
    (``getfixturedefs(name, node)``, pytest >= 8.1), which also knows the fixtures the plugin registers
    after collection (exports that only mocks provide).
    """
    info = getattr(item, "_fixtureinfo", None)
    found = info.name2fixturedefs.get(name) if info is not None else None
    if not found:
        manager = getattr(item.session, "_fixturemanager", None)
        found = manager.getfixturedefs(name, item) if manager is not None else None
    return tuple(found or ())
