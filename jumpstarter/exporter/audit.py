"""The exporter's log as an audit trail: a line a driver logs names the lease holder it was logged under.

The lease lines bracket a test's calls, but a line read on its own (grep, a log shipper that interleaves
exporters) should still say whose test made the board do it. ``HolderTag`` sets ``record.holder`` when a
line is written (not per call): `` [gw0: tests/test_x.py::test_y]`` while a lease is held, else empty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Lines whose own text says whom they concern (the lease lines name their holder).
_UNTAGGED = ("jumpstarter.exporter", "grpc")
_nobody: Callable[[], str] = lambda: ""  # noqa: E731
_holder = _nobody


class HolderTag(logging.Filter):
    """A handler's filter: ``record.holder`` for its format (``%(holder)s``), on every record it writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        holder = "" if record.name.startswith(_UNTAGGED) else _holder()
        record.holder = f" [{holder}]" if holder else ""
        return True


@contextmanager
def holders(current: Callable[[], str]) -> Iterator[None]:
    """While serving: ``current()`` names who holds the exporter now ("" when nobody)."""
    global _holder
    _holder = current
    try:
        yield
    finally:
        _holder = _nobody
