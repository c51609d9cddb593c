"""Boards' health checks: tests that say whether a board is fit, run on it before its first test and after a failure.

A test marked ``@pytest.mark.jumpstarter_health`` (or named by ``--jumpstarter-health-check PATH::NAME``, or by a
conftest's ``pytest_jumpstarter_health_check`` hook) is collected once per board that fits it
(``test_power[rpi-07]``), like a matrix-mode test; ``attempts.py`` runs a board's checks when a test first gets
that board (or when the schedule reaches one of them, whichever comes first), and again after a test failed on
it; -k and -m don't deselect them. A check that fails or errors takes its board out of the run (``boardstate``,
shared by xdist's workers); the check's own report says so ("sick"), and doesn't fail the run: the tests go to
the other boards, and fail, naming the sick boards, only when none is left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from _pytest.runner import runtestprotocol

from pytest_jumpstarter import junit
from pytest_jumpstarter.leasing import TARGET
from pytest_jumpstarter.records import RUN_ATTRIBUTE, SICK
from pytest_jumpstarter.xdist import reporting_for

if TYPE_CHECKING:
    from pytest_jumpstarter.boardstate import BoardState
    from pytest_jumpstarter.lab import Lab

MARKER = "jumpstarter_health"
PROPERTIES = pytest.StashKey[list]()  # a test's user_properties before its first run
OUT_ATTRIBUTE = "jumpstarter_out"  # on a failed check's last report: the line saying its board is out


HOOKED = pytest.StashKey[set[str]]()  # of the config: the tests a pytest_jumpstarter_health_check hook named


def is_health(node: Any, named: tuple[str, ...] = ()) -> bool:
    """Whether a test (or its definition, while collecting) is a health check: marked, named by the ini file or
    option (``named``), or by a conftest's hook (asked once, of the definition: ``declared``)."""
    nodeid = node.nodeid.split("[", 1)[0]
    if node.get_closest_marker(MARKER) is not None or nodeid in named:
        return True
    return nodeid in node.config.stash.get(HOOKED, ())


def declared(definition: pytest.Item, named: tuple[str, ...]) -> bool:
    """While collecting: whether the test function ``definition`` is a health check, its conftest's hook asked."""
    if is_health(definition, named):
        return True
    if definition.ihook.pytest_jumpstarter_health_check(definition=definition):
        definition.config.stash.setdefault(HOOKED, set()).add(definition.nodeid)
        return True
    return False


def target(item: pytest.Item) -> str | None:
    """The exporter a parametrized test is pinned to (matrix mode, a health check), or None."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(TARGET) if callspec is not None else None


class Checks:
    """The run's health checks, out of the schedule, run on a board on demand."""

    def __init__(self, lab: Lab, state: BoardState) -> None:
        self.lab = lab
        self.state = state
        self.named: tuple[str, ...] = tuple(lab.values["health_checks"])
        self.items: list[pytest.Item] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    @pytest.hookimpl(tryfirst=True)  # before xdist's worker sends the collection to the controller
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """A board's checks run whatever tests -k or -m chose: those they deselected come back, first."""
        kept = set(map(id, session.items))
        missing = [item for item in self.items if id(item) not in kept]
        if missing:
            session.items[:0] = missing
            session.testscollected = len(session.items)

    @pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        checks = [item for item in items if is_health(item, self.named)]
        found = {item.nodeid.split("[", 1)[0] for item in checks}
        for name in self.named:
            if name not in found:
                raise pytest.UsageError(
                    f"jumpstarter: health check {name} ({self.lab.values.sources['health_checks']}) was not "
                    "collected: name a test as PATH::NAME relative to the rootdir, in a file pytest collects"
                )
        if not checks:
            return
        unpinned = [item.nodeid for item in checks if target(item) is None]
        if unpinned and self.lab.pool is not None:
            raise pytest.UsageError(
                f"jumpstarter: health check {unpinned[0]} uses no export, or none that an exporter provides: "
                "a health check tests a board through its exports"
            )
        self.items = checks
        if self.lab.pool is not None:
            self.lab.pool.removed = self.state.out
            self.lab.pool.passby = self.state.busy

    def on(self, board: str) -> list[pytest.Item]:
        return [item for item in self.items if target(item) == board]

    def check(self, board: str, before: pytest.Item | None) -> str | None:
        """Run ``board``'s checks (``before``: the test that runs next); why the board is now out, or None."""
        why = None
        for item in self.on(board):
            reports = protocol(item, before)
            bad = next((r for r in reports if r.failed), None)
            if bad is not None and why is None:
                what = "failed" if bad.when == "call" else f"errored in {bad.when}"
                why = f"its health check {item.nodeid} {what}: {error_line(bad)}"
            for report in reports:
                if report.failed:
                    report.outcome = SICK  # type: ignore[assignment]  # not a failure of the run: the board's
            outcome = "error" if bad is not None and bad.when != "call" else "failed" if bad else "passed"
            last = reports[-1]
            errors = [(board, error_line(bad))] if bad is not None else []
            run = {"role": "health", "attempts": [(board, outcome)], "verdict": "", "outcome": outcome}
            setattr(last, RUN_ATTRIBUTE, {**run, "errors": errors})
            out = f"{board} is out of the run: {why}" if bad is not None else None
            if out:
                setattr(last, OUT_ATTRIBUTE, out)
            junit.describe_check(last, out)
            log(item, reports)
        self.state.finish(board, why)
        return why

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Where reports are gathered: the board taken out, in one line, as soon as it is."""
        line = getattr(report, OUT_ATTRIBUTE, None)
        if line and self.lab.workerid is None:
            reporter = self.lab.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.ensure_newline()
                if hasattr(report, "node"):  # from an xdist worker: after the progress letters, on a line of its own
                    reporter.write("\n")
                reporter.write_line(f"jumpstarter: {line}", red=True)


def protocol(item: pytest.Item, nextitem: pytest.Item | None) -> list[pytest.TestReport]:
    """Run ``item``'s set-up, call and teardown, reports not logged: also one not in the schedule, or again.

    pytest tears fixtures down to what the next item shares only after an item; an item run out of turn first
    needs what it doesn't share with the last one torn down (pytest's ``_setupstate``, the one private name used
    here), as if it were next in the schedule."""
    item.session._setupstate.teardown_exact(item)
    item._report_sections = []  # each run's report has its own captured output
    first = item.stash.setdefault(PROPERTIES, list(item.user_properties))
    item.user_properties[:] = first  # and its own properties: those it had before its first run, then its own
    return runtestprotocol(item, nextitem=nextitem, log=False)


def log(item: pytest.Item, reports: list[pytest.TestReport]) -> None:
    with reporting_for(item):
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in reports:
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def error_line(report: pytest.TestReport) -> str:
    """The first line of what went wrong, for one-line notices."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else "(no message)"
