"""Where the lab's time went: which exporter each test held, how long it waited for it, which board was the bottleneck.

Every process that runs tests keeps its claims (``Leasing.records``: the wait, the lease from take to release,
the exporters) and the exporters it saw die or go; they ride on the test's reports, as the report attribute
``jumpstarter_timeline``, to the process that reports (xdist's controller, or the only one): xdist serializes a
report's attributes, so no channel of our own is needed. There ``Timeline`` joins them with the tests' outcomes
for a table per exporter at the end of the run and, with ``--jumpstarter-timeline FILE.html``, a chart
(``timeline_html``). Each test's junitxml record gets ``jumpstarter_waited``, next to ``jumpstarter_exporter``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from jumpstarter.common.safefiles import write_atomic
from pytest_jumpstarter.reporting import EXPORTER_PROPERTY

if TYPE_CHECKING:
    from pytest_jumpstarter.lab import Lab
    from pytest_jumpstarter.leasing import Leasing

WAITED_PROPERTY = "jumpstarter_waited"  # user_properties key: seconds the test waited for its leases (junitxml too)
REPORT_ATTRIBUTE = "jumpstarter_timeline"  # on a test report: leases and gone exporters not yet reported
WAITED = pytest.StashKey[float]()  # on a test: seconds its own claims waited
NOTICEABLE_WAIT = 0.1  # seconds: shorter waits are the lease call itself, not a busy board
# How bad an outcome is: a test's outcome is the worst of its phases'.
OUTCOME_RANK = {"passed": 0, "xfailed": 1, "skipped": 2, "xpassed": 3, "error": 4, "failed": 5}


@dataclass
class LeaseRecord:
    """One claim: what it waited for, and the leases it held from take to release (wall-clock, ``time.time()``)."""

    holder: str  # node id of the test, or of the module ("" the session) with --lease-scope
    exporters: tuple[str, ...]  # the exporters leased; empty when the claim failed
    asked: float
    taken: float | None = None  # None: never taken (``error`` says why)
    released: float | None = None  # None: still held
    worker: str | None = None  # xdist worker id
    error: str = ""
    waited_for: tuple[str, ...] = ()  # the exporters it found busy while it waited
    test: str = ""  # the test whose set-up made the claim, and waited for it
    sent: bool = field(default=False, compare=False, repr=False)  # already on a report

    @property
    def waited(self) -> float:
        end = self.taken if self.taken is not None else self.released
        return max(0.0, (end if end is not None else self.asked) - self.asked)

    def to_dict(self) -> dict[str, Any]:
        """For a report (dataclasses.asdict() would cost a test some 70 us: it copies deep)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sent"}
        data["exporters"], data["waited_for"] = list(self.exporters), list(self.waited_for)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaseRecord:
        return cls(**{**data, "exporters": tuple(data["exporters"]), "waited_for": tuple(data["waited_for"])})


@dataclass
class Gone:
    """An exporter seen dead or unreachable, first at ``at``."""

    exporter: str
    at: float
    why: str


@dataclass
class RanTest:
    """One test as its reports tell it: outcome, when it ran, which exporters it used and how long it waited."""

    nodeid: str
    outcome: str = "passed"
    start: float = 0.0
    stop: float = 0.0
    exporters: list[str] = field(default_factory=list)
    waited: float | None = None
    worker: str | None = None

    def add(self, report: pytest.TestReport) -> None:
        start, stop = getattr(report, "start", 0.0), getattr(report, "stop", 0.0)
        if start:
            self.start = min(self.start, start) if self.start else start
        self.stop = max(self.stop, stop)
        self.worker = getattr(report, "worker_id", None) or self.worker
        outcome = _outcome(report)
        if OUTCOME_RANK[outcome] > OUTCOME_RANK[self.outcome]:
            self.outcome = outcome
        for key, value in report.user_properties:
            if key == EXPORTER_PROPERTY and value not in self.exporters:
                self.exporters.append(str(value))
            elif key == WAITED_PROPERTY:
                self.waited = float(str(value))  # a float here, its text from an xdist worker

    @property
    def broken(self) -> bool:
        return self.outcome in ("failed", "error")


def _outcome(report: pytest.TestReport) -> str:
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    return "xpassed" if report.when == "call" and hasattr(report, "wasxfail") else "passed"


@dataclass
class Usage:
    """One exporter's share of the run: the summary table's row."""

    name: str
    tests: int
    busy: float  # seconds leased
    utilization: float | None  # busy / the test phase's wall time
    waited: float  # seconds tests waited for it, in total
    longest: float
    failures: int
    gone: Gone | None


@dataclass
class Run:
    """Everything the controlling process learnt: the summary and the chart are made from this alone."""

    exporters: list[str]  # one row each, in the lab's order
    tests: dict[str, RanTest]
    leases: list[LeaseRecord]
    gone: dict[str, Gone]
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def phase(self) -> tuple[float, float]:
        """The test phase, from the first test's start to the last one's end (wall-clock)."""
        starts = [t.start for t in self.tests.values() if t.start]
        stops = [t.stop for t in self.tests.values() if t.stop]
        if not starts or not stops:
            return 0.0, 0.0
        return min(starts), max(stops)

    def rows(self) -> list[str]:
        """The exporters to show: the lab's, then any other a record names."""
        names = list(self.exporters)
        for lease in self.leases:
            names += [e for e in lease.exporters if e not in names]
        return names + [e for e in self.gone if e not in names]

    def used(self) -> bool:
        return bool(self.leases) or any(t.exporters for t in self.tests.values())

    def usage(self) -> list[Usage]:
        first, last = self.phase()
        wall = last - first
        usages = []
        for name in self.rows():
            held = [(r.taken, r.released) for r in self.leases if name in r.exporters and r.taken is not None]
            busy = _union([(a, b if b is not None else max(a, last)) for a, b in held])
            waits = [r.waited for r in self.leases if name in r.waited_for]  # not the time to start or reach it
            tests = {t.nodeid for t in self.tests.values() if name in t.exporters}
            tests |= {r.holder for r in self.leases if name in r.exporters and r.holder in self.tests}
            usages.append(
                Usage(
                    name,
                    len(tests),
                    busy,
                    busy / wall if wall > 0 else None,
                    sum(waits),
                    max(waits, default=0.0),
                    sum(1 for t in tests if self.tests[t].broken),
                    self.gone.get(name),
                )
            )
        return usages

    def unleased(self) -> list[LeaseRecord]:
        """Claims that waited and got nothing (timed out, or every fitting exporter was gone)."""
        return [r for r in self.leases if r.taken is None]

    def advice(self, usages: list[Usage]) -> str:
        """The line naming the busiest board, and where another board would help."""
        if not usages:
            return ""
        busiest = max(usages, key=lambda u: (u.busy, u.waited))
        share = f"busy {_percent(busiest.utilization)} of the test phase"
        awaited = max(usages, key=lambda u: u.waited)
        if awaited.waited < NOTICEABLE_WAIT:
            return (
                f"busiest: {busiest.name} ({share}); no test waited for an exporter: more boards alone would not "
                "make this run faster"
            )
        like = self._like(awaited.name)
        if awaited is busiest:
            return (
                f"busiest: {busiest.name} ({share}; tests waited {awaited.waited:.1f} s for it): "
                f"another board {like} would help most"
            )
        return (
            f"busiest: {busiest.name} ({share}); tests waited longest for {awaited.name} "
            f"({awaited.waited:.1f} s): another board {like} would help most"
        )

    def _like(self, name: str) -> str:
        labels = {k: v for k, v in self.labels.get(name, {}).items() if k != "jumpstarter.dev/name"}
        what = ", ".join(f"{k}={v}" for k, v in labels.items())
        return f"like {name}" + (f" ({what})" if what else "")

    def summary(self) -> list[str]:
        """The terminal's table: per exporter, tests run, busy time, utilization, waits, failures; then advice."""
        usages = self.usage()
        first, last = self.phase()
        header = ("exporter", "tests", "busy", "util", "waited", "longest wait", "failed")
        rows = [
            (
                u.name + (" (gone)" if u.gone else ""),
                str(u.tests),
                f"{u.busy:.1f} s",
                _percent(u.utilization),
                f"{u.waited:.1f} s",
                f"{u.longest:.1f} s",
                str(u.failures),
            )
            for u in usages
        ]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in (header, *rows)
        ]
        lines.append(f"test phase {last - first:.1f} s; {self.advice(usages)}")
        unleased = self.unleased()
        if unleased:
            lines.append(
                f"{len(unleased)} claim(s) got no exporter after waiting {sum(r.waited for r in unleased):.1f} s "
                f"in total: {', '.join(r.holder or 'session' for r in unleased)}"
            )
        for u in usages:
            if u.gone:
                lines.append(f"{u.name} gone at +{max(0.0, u.gone.at - first):.1f} s: {u.gone.why.splitlines()[0]}")
        return lines


def _union(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by ``spans`` (overlaps counted once)."""
    total, end = 0.0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction:.0%}"


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
                self.seen[exporter.name] = gone = Gone(exporter.name, time.time(), why)
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
        if call.when == "teardown" and (WAITED in item.stash or _uses_exporters(item)):
            # Before the report copies the item's properties: junitxml writes those of the teardown report.
            waited: float = item.stash.get(WAITED, 0.0)
            item.user_properties.append((WAITED_PROPERTY, round(waited, 3)))
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
        )

    def path(self) -> Path | None:
        """Where --jumpstarter-timeline writes: relative to the ini file when it came from there, else to the
        directory pytest was started in."""
        value = self.lab.values["timeline"]
        if not value:
            return None
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        config = self.lab.config
        if self.lab.values.sources["timeline"].startswith("ini") and config.inipath is not None:
            return config.inipath.parent / path
        return config.invocation_params.dir / path

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
            terminalreporter.write_sep("-", "jumpstarter: exporters")
            for line in run.summary():
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


def _uses_exporters(item: pytest.Item) -> bool:
    return any(key == EXPORTER_PROPERTY for key, _ in item.user_properties)
