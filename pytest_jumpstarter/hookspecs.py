"""Hooks the plugin calls, for other plugins and conftest.py files to implement.

The supported way to prepare a board when a test gets it (flash it, power-cycle it) and to tidy it up
when the test lets it go: what upstream's exporter ``beforeLease``/``afterLease`` scripts do there, done
here by the test run, which knows which test holds which exporter. And the way a conftest.py names its
boards' health checks in code.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_jumpstarter_lease_acquired(node: pytest.Item | pytest.Collector, exporter: Any) -> None:
    """An exporter was leased for ``node``: the test, or the module or session with ``--lease-scope``.

    ``exporter.name`` and ``exporter.labels`` say which one; ``exporter.client()`` is its root client (its
    exports are its children). Raising fails the tests that asked for it, and the lease is given back.
    """


@pytest.hookspec
def pytest_jumpstarter_lease_released(node: pytest.Item | pytest.Collector, exporter: Any) -> None:
    """The lease of ``exporter`` for ``node`` is about to be given back (the node's fixtures are ending)."""


@pytest.hookspec(firstresult=True)
def pytest_jumpstarter_health_check(definition: pytest.Item) -> bool | None:
    """Whether the test function ``definition`` is a board's health check, as if marked
    ``@pytest.mark.jumpstarter_health``: return True to make it one, None to leave it to its marker.

    Asked once per test function that uses exports, before it is collected once per fitting board, of the
    conftest.py files of its folder and above (and plugins): a conftest names its folder's checks in code
    (``definition.name``, ``definition.path``, ``definition.nodeid``), where the ini file names them by node id
    (``jumpstarter_health_checks``).
    """
