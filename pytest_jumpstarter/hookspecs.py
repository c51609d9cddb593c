"""Hooks the plugin calls, for other plugins and conftest.py files to implement.

The supported way to prepare a board when a test gets it (flash it, power-cycle it) and to tidy it up
when the test lets it go: what upstream's exporter ``beforeLease``/``afterLease`` scripts do there, done
here by the test run, which knows which test holds which exporter.
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
