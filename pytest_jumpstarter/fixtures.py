"""The fixtures: a client per export name, ``exporter`` (the leased root), and in-process mocks.

An export's fixture gives the client of that export on the exporter the test leased, or, where the test's
``@pytest.mark.jumpstarter_mock`` names it, the client of a driver served in-process (a driver below an
export is mocked by its path, ``**{"board.power": MockPower}``). In matrix mode a test runs once per
exporter that fits it. The mocks are served by mock.py; the set-up checks are checks.py's.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_jumpstarter.health import declared
from pytest_jumpstarter.leasing import EXPORT_ATTRIBUTE, MOCK_MARKER, ROOT, TARGET
from pytest_jumpstarter.mock import mock_children, mocked

if TYPE_CHECKING:
    from jumpstarter.client.connection import Connection
    from pytest_jumpstarter.exporters import Exporter
    from pytest_jumpstarter.lab import Lab
    from pytest_jumpstarter.leasing import Leasing
    from pytest_jumpstarter.recording import Recorder
    from pytest_jumpstarter.replay import Replayer
    from pytest_jumpstarter.reporting import Reporting


class Fixtures:
    def __init__(
        self,
        lab: Lab,
        leasing: Leasing,
        reporting: Reporting,
        recorder: Recorder | None = None,
        replayer: Replayer | None = None,
    ) -> None:
        self.lab, self.leasing, self.reporting = lab, leasing, reporting
        self.recorder, self.replayer = recorder, replayer
        self.names: set[str] = set()  # the export names that have a fixture
        if lab.exporters or replayer:
            root = types.ModuleType("pytest_jumpstarter.exports")
            setattr(root, ROOT, pytest.fixture(name=ROOT, scope=lab.scope)(self._root_fixture()))
            lab.config.pluginmanager.register(root, "jumpstarter-exports")
            self.add([n for e in lab.exporters for n in e.exports] + (replayer.names() if replayer else []))
        if replayer:
            replayer.add_fixtures = self.add  # as it reads each collected module's recording

    def add(self, names: list[str]) -> None:
        """Register a fixture for each export name that has none yet."""
        names = [n for n in dict.fromkeys(names) if n not in self.names]
        if not names:
            return
        scope = self.lab.scope
        fixtures = types.ModuleType(f"pytest_jumpstarter.exports.{'_'.join(names)}")
        if not self.names:
            setattr(fixtures, TARGET, pytest.fixture(name=TARGET, scope=scope)(_target))
        for name in names:
            setattr(fixtures, name, pytest.fixture(name=name, scope=scope)(self._export_fixture(name)))
        self.lab.config.pluginmanager.register(fixtures, f"jumpstarter-exports-{'-'.join(names)}")
        self.names.update(names)

    def _export_fixture(self, name: str):
        def export(request: pytest.FixtureRequest, jumpstarter_target: str | None):
            client = mocked(name, request, self.reporting.record)
            if client is None and self.replayer:
                client = self.replayer.client(name, request)
                client.connection.observers.append(self.reporting.record)
            elif client is None:
                claim = self.leasing.claim(request, jumpstarter_target)
                if name not in claim.chosen:
                    pytest.fail(
                        f"export {name!r} is only mocked ({MOCK_MARKER}) for other tests; this one has no mock", False
                    )
                client = self._tree(claim.chosen[name], name, request)
            mock_children(name, client, request, self.reporting.record)
            return client

        providers = [e.describe() for e in self.lab.exporters if name in e.exports]
        export.__doc__ = f"client of export {name!r} ({', '.join(providers) or f'@pytest.mark.{MOCK_MARKER}'})"
        setattr(export, EXPORT_ATTRIBUTE, name)
        return export

    def _root_fixture(self):
        def exporter(request: pytest.FixtureRequest, jumpstarter_target: str | None):
            """The root client of the exporter this test leased (children: its exports)."""
            if self.replayer:
                return self.replayer.client(ROOT, request)
            return self._tree(self.leasing.claim(request, jumpstarter_target).first, ROOT, request)

        setattr(exporter, EXPORT_ATTRIBUTE, None)
        return exporter

    def _tree(self, exporter: Exporter, fixture: str, request: pytest.FixtureRequest) -> Any:
        """A client tree of ``exporter`` for this fixture alone, closed when it ends (see ``tree``)."""
        item = request.node if isinstance(request.node, pytest.Item) else None
        seconds = self.lab.values.seconds("call_timeout", item)  # --call-timeout, or the test's marker's
        tree = self.tree(exporter.client(), seconds if seconds > 0 else None)
        request.addfinalizer(tree._close_tree)
        client = tree if fixture == ROOT else tree.children[exporter.export_names.get(fixture, fixture)]
        if self.recorder:
            request.addfinalizer(self.recorder.attach(fixture, client))
        return client

    def tree(self, root: Any, call_timeout: float | None) -> Any:
        """A new client tree like ``root``'s, recorded when recording: a client that keeps state (a cache of the
        driver's methods, a console it opened) starts afresh in each test, live as on replay, so no test depends
        on which ran before it on the worker. A copy of the tree built once from the exporter's report."""
        from jumpstarter.client.tree import fresh_tree

        root.connection.call_timeout = call_timeout
        # A RecordingConnection stands where a Connection does: it passes every call on.
        connection = cast("Connection", self.recorder.connection(root.connection)) if self.recorder else None
        return fresh_tree(root, connection)

    @contextmanager
    def env(self) -> Iterator[Any]:
        """What ``jumpstarter.utils.env()`` gives a test when no shell is around (upstream-style tests): a root
        client of an exporter of the run, leased while inside, a tree of its own, recorded and replayed as a
        fixture's is (under the name ``env()``)."""
        from pytest_jumpstarter.tapes import ENV  # not at import: tapes loads grpc, and the plugin is inert until used

        if self.replayer:
            with self.replayer.env() as client:
                yield client
            return
        with self.leasing.env_lease() as root:
            seconds = self.lab.values.seconds("call_timeout")
            tree = self.tree(root, seconds if seconds > 0 else None)
            detach = self.recorder.attach(ENV, tree) if self.recorder else None
            try:
                yield tree
            finally:
                tree._close_tree()
                if detach:
                    detach()

    # Hooks ---------------------------------------------------------------------------------------

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Export names that only mocks provide get fixtures too (a test may mock without any exporter)."""
        mocked = {
            name for item in items for m in item.iter_markers(MOCK_MARKER) for name in m.kwargs if "." not in name
        }
        self.add(sorted(mocked - self.names))

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Matrix mode, and health checks: a test that uses exports runs once per exporter that fits it."""
        lab = self.lab
        if lab.pool is None or TARGET not in metafunc.fixturenames:
            return
        if not declared(metafunc.definition, lab.values["health_checks"]) and not lab.values["matrix"]:
            return
        names = lab.pool.targets(self.leasing.needs_of(metafunc.definition))
        if names:  # none fits: unparametrized, the test fails at set-up saying why
            metafunc.parametrize(TARGET, names, ids=names, indirect=True, scope=lab.scope)


def _target(request: pytest.FixtureRequest) -> str | None:
    """The exporter a matrix-mode test runs on (None: any that fits and is free)."""
    return getattr(request, "param", None)
