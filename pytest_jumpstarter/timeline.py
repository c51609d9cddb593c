"""Where the lab's time went: which exporter each test held, how long it waited for it, which board was the bottleneck.

Every process that runs tests keeps its claims (``Leasing.records``: the wait, the lease from take to release,
the exporters) and the exporters it saw die or go; they ride on the test's reports, as the report attribute
``jumpstarter_timeline``, to the process that reports (xdist's controller, or the only one): xdist serializes a
report's attributes, so no channel of our own is needed. There ``Timeline`` joins them with the tests' outcomes
for a table per exporter at the end of the run and, with ``--jumpstarter-timeline FILE.html``, a chart
(``timeline_html``), both made from the data of ``records``. Each test's junitxml record gets
``jumpstarter_waited``, next to ``jumpstarter_exporter``; with ``--lab``, ``jumpstarter_queued`` too (the part of
the wait spent queueing at the labgrid coordinator), and the table's rows are the lab's places.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from jumpstarter.common.safefiles import write_atomic
from pytest_jumpstarter.records import QUEUED_PROPERTY, WAITED_PROPERTY, Gone, LeaseRecord, RanTest, Run
from pytest_jumpstarter.reporting import EXPORTER_PROPERTY

if TYPE_CHECKING:
    from pytest_jumpstarter.lab import Lab
    from pytest_jumpstarter.leasing import Leasing

REPORT_ATTRIBUTE = "jumpstarter_timeline"  # on a test report: leases and gone exporters not yet reported
WAITED = pytest.StashKey[float]()  # on a test: seconds its own claims waited
QUEUED = pytest.StashKey[float]()  # of that, seconds queued at a lab's coordinator (--lab)


class Timeline:
    """Records the claims and gone exporters of this process on its test reports; where reports are gathered
    (xdist's controller, or the only process), joins them for the summary table and the HTML chart."""

    def __init__(self, lab: Lab, leasing: Leasing) -> None:
        self.lab = lab
        self.leasing = leasing
        self.tagged = 0  # how many of Leasing.records were given to a test (their waits) already
        self.seen: dict[str, Gone] = {}  # exporters this process saw gone
        self.unsent: list[Gone] = []
        # Gathered from the reports:
        self.tests: dict[str, RanTest] = {}
        self.leases: list[LeaseRecord] = []
        self.gone: dict[str, Gone] = {}
        self.written: Path | None = None
        self.write_error = ""

    # Where tests run ------------------------------------------------------------------------------

    def poll(self) -> None:
        """Note exporters that died or were marked gone since last time (the first sighting is their time)."""
        for exporter in self.lab.exporters:
            if exporter.name in self.seen:
                continue
            why = exporter.failure()
            if why:
                refused = exporter.refused and why == exporter.gone  # not if it died since
                self.seen[exporter.name] = gone = Gone(exporter.name, time.time(), why, refused)
                self.unsent.append(gone)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        records = self.leasing.records
        new = records[self.tagged :]  # claims made since the last report: this test's (they run in its set-up)
        if new:
            self.tagged = len(records)
            for record in new:
                record.test = item.nodeid
            item.stash[WAITED] = item.stash.get(WAITED, 0.0) + sum(r.waited for r in new)
            item.stash[QUEUED] = item.stash.get(QUEUED, 0.0) + sum(r.queued for r in new)
        if call.when == "teardown" and (WAITED in item.stash or _uses_exporters(item)):
            # Before the report copies the item's properties: junitxml writes those of the teardown report.
            waited: float = item.stash.get(WAITED, 0.0)
            item.user_properties.append((WAITED_PROPERTY, round(waited, 3)))
            if self.lab.values["lab"]:
                queued: float = item.stash.get(QUEUED, 0.0)
                item.user_properties.append((QUEUED_PROPERTY, round(queued, 3)))
        report = yield
        if self.lab.exporters:
            self.poll()
        finished = [r for r in records if not r.sent and r.released is not None]
        if finished or self.unsent:
            for record in finished:
                record.sent = True
            payload = {"leases": [r.to_dict() for r in finished], "gone": [asdict(g) for g in self.unsent]}
            setattr(report, REPORT_ATTRIBUTE, payload)
            self.unsent = []
            if self.tagged == len(records) and all(r.sent for r in records):  # keep only what is still held
                records.clear()
                self.tagged = 0
        return report

    # Where reports are gathered -------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.lab.workerid is not None:
            return
        self.tests.setdefault(report.nodeid, RanTest(report.nodeid)).add(report)
        payload = getattr(report, REPORT_ATTRIBUTE, None)
        if payload:
            self.leases += [LeaseRecord.from_dict(r) for r in payload.get("leases", ())]
            for data in payload.get("gone", ()):
                self.note_gone(Gone(**data))
        if self.lab.exporters:  # under xdist: the exporters this process started, seen dying
            self.poll()
            for gone in self.unsent:
                self.note_gone(gone)
            self.unsent = []

    def note_gone(self, gone: Gone) -> None:
        known = self.gone.get(gone.exporter)
        if known is None or gone.at < known.at:
            self.gone[gone.exporter] = gone

    def run(self) -> Run:
        return Run(
            [e.name for e in self.lab.exporters],
            self.tests,
            self.leases,
            self.gone,
            {e.name: dict(e.labels) for e in self.lab.exporters},
            lab_address(self.lab.values["lab"]),
        )

    def path(self) -> Path | None:
        return self.lab.path("timeline")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.lab.workerid is not None:
            return
        path = self.path()
        if path is None:
            return
        from pytest_jumpstarter.timeline_html import render

        try:
            page = render(self.run(), title=command_line(session.config.invocation_params.args))
            write_atomic(path, page.encode("utf-8"))  # never through a link; the old page stays whole on failure
            self.written = path
        except OSError as exc:
            self.write_error = f"can't write the timeline {path}: {exc}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lab.workerid is not None:
            return
        run = self.run()
        if run.used():
            terminalreporter.write_sep(
                "-", f"jumpstarter: places of labgrid://{run.lab}" if run.lab else "jumpstarter: exporters"
            )
            for line in run.summary():
                terminalreporter.write_line(line)
        for title, lines in (("retried on other boards", run.retried()), ("board suspects", run.suspects())):
            if lines:
                terminalreporter.write_sep("-", f"jumpstarter: {title}", yellow=True)
                for line in lines:
                    terminalreporter.write_line(line)
        if self.written is not None:
            terminalreporter.write_line(f"jumpstarter: timeline written to {self.written}")
        if self.write_error:
            terminalreporter.write_line(f"jumpstarter: {self.write_error}", red=True)


def command_line(args: tuple[str, ...] | list[str]) -> str:
    """The run's command for the page's header, passphrases hidden: the file may be published with the CI run."""
    shown: list[str] = []
    for arg in args:
        if shown and "passphrase" in shown[-1] and "=" not in shown[-1]:
            arg = "***"
        elif "passphrase" in arg and "=" in arg:
            arg = arg.split("=", 1)[0] + "=***"
        shown.append(arg)
    return " ".join(["pytest", *shown])


def lab_address(url: str | None) -> str:
    """The coordinator's HOST:PORT of a run's --lab (checked as the run started), or "" without one."""
    if not url:
        return ""
    from jumpstarter.labgrid.coordinator import parse_url

    return parse_url(url)


def _uses_exporters(item: pytest.Item) -> bool:
    return any(key == EXPORTER_PROPERTY for key, _ in item.user_properties)
