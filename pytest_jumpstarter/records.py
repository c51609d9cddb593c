"""The timeline's records: each claim's lease, each test's outcome and wait, each exporter's share of the run.

Plain data (dataclasses) that ride from the processes that run tests to the one that reports (``timeline``),
and that the summary table and the chart (``timeline_html``) are made from; it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import pytest

from jumpstarter.common.pages import seconds  # one rounding for the timeline's table and tooltips
from pytest_jumpstarter.reporting import EXPORTER_PROPERTY

RUN_ATTRIBUTE = "jumpstarter_run"  # on the last report of a test's run: its role, attempts and verdict (see RanTest)
RETRIED, SICK = "retried", "sick"  # outcomes of reports that don't count: a retried attempt, a failed health check
WAITED_PROPERTY = "jumpstarter_waited"  # user_properties key: seconds the test waited for its leases (junitxml too)
QUEUED_PROPERTY = "jumpstarter_queued"  # and of that, seconds it queued at a lab's coordinator (--lab runs only)
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
    hooks: list[dict[str, Any]] = field(default_factory=list)  # the exporters' hooks it waited for (hookruns)
    # Through a lab (--lab): the first ``queued`` s of its wait were at the coordinator, until its places were
    # allocated; the rest acquired them and leased their exporters (``waited_for``: those found leased meanwhile).
    queued: float = 0.0
    places: tuple[str, ...] = ()  # the lab's places it got
    queued_behind: tuple[str, ...] = ()  # the places it found held or reserved while it queued
    sent: bool = field(default=False, compare=False, repr=False)  # already on a report

    @property
    def waited(self) -> float:
        end = self.taken if self.taken is not None else self.released
        return max(0.0, (end if end is not None else self.asked) - self.asked)

    def waited_on(self, exporter: str) -> float:
        """Seconds it waited because ``exporter`` was busy, as the usage table counts them: the time to start or
        reach a free one is not waiting for it (``reaching``), nor the time queued at a lab's coordinator."""
        return self.waited - self.queued if exporter in self.waited_for else 0.0

    def queued_on(self, place: str) -> float:
        """Seconds it queued at a lab's coordinator before it got ``place``, or, for a claim that timed out in the
        queue, while ``place`` was held by another."""
        return self.queued if place in (self.places if self.taken is not None else self.queued_behind) else 0.0

    def reaching(self, exporter: str) -> str:
        """How the tooltips say the rest of its wait: ``, 0.03 s to start or reach it``, or nothing."""
        rest = self.waited - self.queued - self.waited_on(exporter)
        return f", {seconds(rest)} to start or reach it" if round(rest, 2) > 0 else ""

    def to_dict(self) -> dict[str, Any]:
        """For a report (dataclasses.asdict() would cost a test some 70 us: it copies deep)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sent"}
        for name in TUPLES:
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaseRecord:
        return cls(**{**data, **{name: tuple(data.get(name, ())) for name in TUPLES}})


TUPLES = ("exporters", "waited_for", "places", "queued_behind")  # LeaseRecord's fields that travel as lists


@dataclass
class Gone:
    """An exporter seen dead or unreachable, or running but refused (its client class not allowed here), first at
    ``at``."""

    exporter: str
    at: float
    why: str
    refused: bool = False  # it runs, but names a client class this side won't load

    @property
    def what(self) -> str:
        """What the table calls it: it is not gone when only its client class was refused."""
        return "client class refused" if self.refused else "gone"


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
    role: str = "test"  # "test", or "health": a board's health check
    # One per try, in order: (the exporters it ran on, "+"-joined; its outcome). Filled when health checks or
    # --jumpstarter-retry-elsewhere are on; a health check has one per board check.
    attempts: list[tuple[str, str]] = field(default_factory=list)
    # "code" (failed on every board tried), "board" (failed on one, passed on another, and failed again there or
    # that board is out), "flaky" (passed on retry, and on the board it failed on too), "" (not retried)
    verdict: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)  # (board, the first line of a failed try's error)
    # Boards of its failed tries that a health check took out of the run (after the failure, or before it ended)
    sick: list[str] = field(default_factory=list)

    def add(self, report: pytest.TestReport) -> None:
        start, stop = getattr(report, "start", 0.0), getattr(report, "stop", 0.0)
        if start:
            self.start = min(self.start, start) if self.start else start
        self.stop = max(self.stop, stop)
        self.worker = getattr(report, "worker_id", None) or self.worker
        run = getattr(report, RUN_ATTRIBUTE, None)
        if run:
            self.role = run["role"]
            self.attempts += [(str(a), str(b)) for a, b in run["attempts"]]
            self.verdict = run["verdict"] or self.verdict
            self.errors += [(str(a), str(b)) for a, b in run.get("errors", ())]
            self.sick += [str(b) for b in run.get("sick", ()) if b not in self.sick]
        outcome = run["outcome"] if run else None if report.outcome in (RETRIED, SICK) else outcome_of(report)
        if outcome is not None and OUTCOME_RANK[outcome] > OUTCOME_RANK[self.outcome]:
            self.outcome = outcome
        for key, value in report.user_properties:
            if key == EXPORTER_PROPERTY and value not in self.exporters:
                self.exporters.append(str(value))
            elif key == WAITED_PROPERTY:
                self.waited = float(str(value))  # a float here, its text from an xdist worker

    @property
    def broken(self) -> bool:
        return self.outcome in ("failed", "error")

    def failed_on(self, board: str) -> bool:
        return any(o in BROKEN and board in b.split("+") for b, o in self.attempts)

    def suspects(self) -> list[str]:
        """The boards this test failed on and never passed on (a board verdict's culprits)."""
        return suspects(self.attempts, self.sick)

    def story(self) -> str:
        """The verdict in words: "failed on rpi-07, passed on rpi-03: the board"."""
        failed = list(dict.fromkeys(b for b, o in self.attempts if o in BROKEN and b))
        passed = list(dict.fromkeys(b for b, o in self.attempts if o not in BROKEN and b and b not in failed))
        if self.verdict == "code":
            return f"fails everywhere (on {', '.join(failed)}): the code"
        text = f"failed on {', '.join(failed)}, passed on {', '.join(passed)}"
        if self.verdict == "flaky":
            again = [b for b in failed if any(a == b and o not in BROKEN for a, o in self.attempts)]
            return f"{text}, and on {', '.join(again)} again: flaky"
        return f"{text}: the board" if self.verdict == "board" else text


BROKEN = ("failed", "error")


def suspects(attempts: list[tuple[str, str]], sick: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The boards of ``attempts`` that failed and never passed, when some other board passed. A try on several
    boards ("d0+p0") names those of them whose health check failed after it (``sick``), or all of them together
    when none did: which of them failed the test is unknown."""
    passed = {b for b, o in attempts if o not in BROKEN}
    if not passed:
        return []
    named: list[str] = []
    for boards in (b for b, o in attempts if o in BROKEN and b and b not in passed):
        out = [part for part in boards.split("+") if part in sick]
        named += out if "+" in boards and out else [boards]
    return list(dict.fromkeys(named))


def verdict(attempts: list[tuple[str, str]], out: set[str] | frozenset[str] = frozenset()) -> str:
    """How ``attempts`` classify: see ``RanTest.verdict``. A board in ``out`` failed its health check."""
    if len(attempts) < 2:
        return ""
    if all(o in BROKEN for _, o in attempts):
        return "code"
    failed = {part for b, o in attempts if o in BROKEN for part in b.split("+")}
    if suspects(attempts) or failed & set(out):
        return "board"
    return "flaky"


def outcome_of(report: pytest.TestReport) -> str:
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
    failures: int  # tests that failed there (a try that failed there counts, though the test passed elsewhere)
    gone: Gone | None
    health: str = ""  # its health checks: "ok", "out" (one failed), "" (none ran)
    queued: float = 0.0  # seconds tests queued at a lab's coordinator before they got this place (--lab)


@dataclass
class Run:
    """Everything the controlling process learnt: the summary and the chart are made from this alone."""

    exporters: list[str]  # one row each, in the lab's order
    tests: dict[str, RanTest]
    leases: list[LeaseRecord]
    gone: dict[str, Gone]
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    lab: str = ""  # the address of the labgrid coordinator the exporters came from (--lab): its rows are places

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
            if lease.taken is None:  # a lab's places that a claim queued behind till it gave up: where time went
                names += [p for p in lease.queued_behind if p not in names]
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
            waits = [r.waited_on(name) for r in self.leases if name in r.waited_for]  # not the time to reach it
            tests = {t.nodeid for t in self.tests.values() if name in t.exporters}
            tests |= {r.holder for r in self.leases if name in r.exporters and r.holder in self.tests}
            checks = [
                o for t in tests if self.tests[t].role == "health" for b, o in self.tests[t].attempts if b == name
            ]
            tests = {t for t in tests if self.tests[t].role != "health"}
            usages.append(
                Usage(
                    name,
                    len(tests),
                    busy,
                    busy / wall if wall > 0 else None,
                    sum(waits),
                    max(waits, default=0.0),
                    sum(1 for t in tests if self.tests[t].broken or self.tests[t].failed_on(name)),
                    self.gone.get(name),
                    ("out" if any(o in BROKEN for o in checks) else "ok") if checks else "",
                    sum(r.queued_on(name) for r in self.leases),
                )
            )
        return usages

    def unleased(self) -> list[LeaseRecord]:
        """Claims that waited and got nothing (timed out, or every fitting exporter was gone)."""
        return [r for r in self.leases if r.taken is None]

    def advice(self, usages: list[Usage]) -> str:
        """The line naming the busiest board, and where another board would help (a place, in a lab's run: there
        a test's wait is mostly its queue at the coordinator)."""
        if not usages:
            return ""
        busiest = max(usages, key=lambda u: (u.busy, u.waited + u.queued))
        share = f"busy {_percent(busiest.utilization)} of the test phase"
        awaited = max(usages, key=lambda u: u.waited + u.queued)
        board = "place" if self.lab else "board"
        total = awaited.waited + awaited.queued
        if total < NOTICEABLE_WAIT:
            what = "queued for a place" if self.lab else "waited for an exporter"
            return (
                f"busiest: {busiest.name} ({share}); no test {what}: more {board}s alone would not make this run faster"
            )
        verb = "waited" if not self.lab else "queued" if awaited.waited < NOTICEABLE_WAIT else "queued and waited"
        like = self._like(awaited.name)
        if awaited is busiest:
            return (
                f"busiest: {busiest.name} ({share}; tests {verb} {total:.1f} s for it): "
                f"another {board} {like} would help most"
            )
        return (
            f"busiest: {busiest.name} ({share}); tests {verb} longest for {awaited.name} "
            f"({total:.1f} s): another {board} {like} would help most"
        )

    def _like(self, name: str) -> str:
        labels = {k: v for k, v in self.labels.get(name, {}).items() if k != "jumpstarter.dev/name"}
        what = ", ".join(f"{k}={v}" for k, v in labels.items())
        return f"like {name}" + (f" ({what})" if what else "")

    def summary(self) -> list[str]:
        """The terminal's table: per exporter, tests run, busy time, utilization, waits, failures; then advice."""
        usages = self.usage()
        first, last = self.phase()
        checked = any(u.health for u in usages)
        header = ["exporter", "tests", "busy", "util", "waited", "longest wait", "failed", "health"][: 7 + checked]
        rows = [
            [
                u.name + (f" ({u.gone.what})" if u.gone else ""),
                str(u.tests),
                f"{u.busy:.1f} s",
                _percent(u.utilization),
                f"{u.waited:.1f} s",
                f"{u.longest:.1f} s",
                str(u.failures),
                u.health or "-",
            ][: 7 + checked]
            for u in usages
        ]
        if self.lab:  # a row per place, and the time queued for it at the coordinator before the exporter's wait
            header[0:1], header[4:4] = ["place"], ["queued"]
            for row, u in zip(rows, usages, strict=True):
                row.insert(4, f"{u.queued:.1f} s")
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in (header, *rows)
        ]
        lines += self.queue()
        lines.append(f"test phase {last - first:.1f} s; {self.advice(usages)}")
        unleased = [r for r in self.unleased() if not self.gave_up_queued(r)]  # the others: queued_out()
        if unleased:
            lines.append(
                f"{len(unleased)} claim(s) got no exporter after waiting {sum(r.waited for r in unleased):.1f} s "
                f"in total: {', '.join(r.holder or 'session' for r in unleased)}"
            )
        lines += self.queued_out()
        for u in usages:
            if u.gone:
                at = max(0.0, u.gone.at - first)
                lines.append(f"{u.name} {u.gone.what} at +{at:.1f} s: {u.gone.why.splitlines()[0]}")
        lines += self.sick()
        return lines

    def queue(self) -> list[str]:
        """A lab's run: the line of the time its tests queued at the coordinator, in total and at most."""
        queued = [r for r in self.leases if r.queued > 0]
        if not self.lab or not queued:
            return []
        longest = max(queued, key=lambda r: r.queued)
        return [
            f"tests queued {sum(r.queued for r in queued):.1f} s in total at the labgrid coordinator {self.lab}, "
            f"the longest {longest.queued:.1f} s ({longest.test or longest.holder or 'session'})"
        ]

    def queued_out(self) -> list[str]:
        """A lab's run: a line per claim that timed out in the coordinator's queue, naming the places held."""
        return [
            f"{r.test or r.holder or 'session'} queued {r.queued:.1f} s at the labgrid coordinator {self.lab} "
            f"behind {', '.join(r.queued_behind)} and got no place"
            for r in self.unleased()
            if self.gave_up_queued(r)
        ]

    def gave_up_queued(self, record: LeaseRecord) -> bool:
        """A lab's claim that timed out in the coordinator's queue while the places that fit it were held."""
        return bool(self.lab and record.taken is None and record.queued > 0 and record.queued_behind)

    def sick(self) -> list[str]:
        """A line per board a health check took out of the run: which check, its error."""
        lines = []
        for test in self.tests.values():
            if test.role == "health":
                for board, error in test.errors:
                    lines.append(f"{board} out of the run: its health check {test.nodeid} failed: {error}")
        return lines

    def retried(self) -> list[str]:
        """A line per test run on more than one board, with its verdict: the code's, a board's, or flaky."""
        return [f"{t.nodeid}: {t.story()}" for t in self.tests.values() if t.role == "test" and t.verdict]

    def suspects(self) -> list[str]:
        """The boards that failed tests which passed on other boards: a line per board, naming the tests."""
        boards: dict[str, list[RanTest]] = {}
        for test in self.tests.values():
            if test.verdict == "board":
                for board in test.suspects():
                    boards.setdefault(board, []).append(test)
        lines = []
        for board, tests in boards.items():
            lines.append(f"{board}: {len(tests)} test(s) failed there and passed on another board:")
            for test in tests:
                errors = [e for b, e in test.errors if b == board or board in b.split("+")]
                lines.append(f"  {test.nodeid}: {test.story()}" + (f" ({errors[0]})" if errors else ""))
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
