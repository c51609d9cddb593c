"""In-process mocks: serve a Driver under an export name (or a driver's path below one), through the real gRPC
path: ``mock_export()`` in a conftest.py, or a test's ``@pytest.mark.jumpstarter_mock``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest

from pytest_jumpstarter.settings import Scope

if TYPE_CHECKING:
    from jumpstarter.client.connection import CallObserver

MOCK_MARKER = "jumpstarter_mock"  # the exports a test mocks take no lease


def mock_export(factory: Callable[[], Any], *, name: str | None = None, scope: Scope = "function") -> Any:
    """A fixture serving ``factory()`` (a Driver) in-process; its value is the driver's client.

    In a ``conftest.py``, ``custom = mock_export(MockCustomDriver)`` makes every test
    below it that asks for ``custom`` use the mock instead of the exporters' ``custom``.
    """

    def fixture():
        from jumpstarter.inprocess import serve

        with serve(factory()) as client:
            yield client

    return pytest.fixture(fixture, scope=scope, name=name) if name else pytest.fixture(fixture, scope=scope)


def mocked(name: str, request: pytest.FixtureRequest, record: CallObserver) -> Any:
    """The client of the mock a test's jumpstarter_mock marker gives export ``name``, or None."""
    for marker in request.node.iter_markers(MOCK_MARKER):
        if name in marker.kwargs:
            return serve_mock(marker.kwargs[name], request, record)
    return None


def serve_mock(driver: Any, request: pytest.FixtureRequest, record: CallObserver) -> Any:
    """``driver`` (a Driver, or a factory of one) served in-process until the test's fixtures end."""
    from jumpstarter.driver import Driver
    from jumpstarter.inprocess import serve

    driver = driver if isinstance(driver, Driver) else driver()
    stack = ExitStack()
    client = stack.enter_context(serve(driver))
    request.addfinalizer(stack.close)
    client.connection.observers.append(record)
    return client


def mock_children(name: str, client: Any, request: pytest.FixtureRequest, record: CallObserver) -> None:
    """Mocks of drivers below export ``name`` (``jumpstarter_mock(**{"dut.power": MockPower})``): for this
    test, the child's client is the mock's, in the export's client (real or mocked) it is a child of."""
    mocks: dict[str, Any] = {}
    for marker in request.node.iter_markers(MOCK_MARKER):  # the closest marker wins
        for key, driver in marker.kwargs.items():
            if key.startswith(f"{name}."):
                mocks.setdefault(key, driver)
    for path, driver in mocks.items():
        parent = client
        *between, last = path.split(".")[1:]
        try:
            for step in between:
                parent = parent.children[step]
            original = parent.children[last]
        except KeyError:
            pytest.fail(f"@pytest.mark.{MOCK_MARKER}: {path!r}: {name!r} has no such child", pytrace=False)
        parent.children[last] = serve_mock(driver, request, record)
        request.addfinalizer(partial(parent.children.__setitem__, last, original))
