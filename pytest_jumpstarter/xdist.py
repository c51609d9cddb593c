"""pytest-xdist: the controlling process starts every exporter once and hands the workers their addresses.

Each worker then reaches the same exporters; the exporters' own leases keep two workers' tests off one
board. ``-n auto`` starts one worker per exporter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_jumpstarter.exporters import Exporter

HANDOFF = "jumpstarter_exporters"  # key of xdist's workerinput


def worker_id(config: pytest.Config) -> str | None:
    """This process's xdist worker id ("gw0"), or None in the controlling (or only) process."""
    return getattr(config, "workerinput", {}).get("workerid")


def handoffs(config: pytest.Config) -> list[dict[str, Any]] | None:
    """In a worker: what the controlling process said about each exporter; else None."""
    return getattr(config, "workerinput", {}).get(HANDOFF)


class Handoff:
    """In the controlling process: start the exporters once, and tell each worker where they are."""

    def __init__(self, exporters: Sequence[Exporter]) -> None:
        self.exporters = exporters  # the lab's: the handoff needs nothing else of it
        self._handoffs: list[dict[str, Any]] | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self._handoffs is None:
            with ThreadPoolExecutor(max(1, len(self.exporters))) as starting:
                self._handoffs = list(starting.map(lambda e: e.handoff(), self.exporters))
        node.workerinput[HANDOFF] = self._handoffs


@contextmanager
def reporting_for(item: pytest.Item) -> Iterator[None]:
    """Log reports of ``item`` while another test runs (a board's health check, run before it): an xdist worker
    sends each report under the index of the test it runs, and checks that the two agree; here, while inside,
    that index is ``item``'s (xdist's ``WorkerInteractor.item_index``, the one private name used here)."""
    worker = next((p for p in item.config.pluginmanager.get_plugins() if type(p).__name__ == "WorkerInteractor"), None)
    if worker is None or not hasattr(worker, "item_index"):
        yield
        return
    before = worker.item_index
    worker.item_index = item.session.items.index(item)
    try:
        yield
    finally:
        worker.item_index = before
