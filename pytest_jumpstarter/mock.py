"""In-process mocks: serve a Driver under an export name, through the real gRPC path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_jumpstarter.settings import Scope


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
