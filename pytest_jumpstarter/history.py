"""The run's page in the lab's memory: ``--jumpstarter-history FILE.db`` appends it; ``--jumpstarter-quarantine``
reads it to keep suspect boards out.

Only the controlling process (xdist's controller, or the only one) touches the file: it checks it at configure,
before any test runs (a damaged or newer file stops the run there, untouched), and appends the run at its end in
one transaction, from what the timeline gathered (``Timeline.tests`` and ``.leases``: the outcomes, exporters,
attempts and roles of every test, from every worker). Text that could carry a secret (test ids, exporter names,
errors, the command line) is redacted, the session's passphrase with it. The quarantine's suspects reach xdist's
workers with the exporters' handoff.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import pytest

from jumpstarter.common.secrets import redact
from jumpstarter.history.store import BROKEN, Held, HistoryError, Result, RunRecord, append, check
from pytest_jumpstarter.launch import NO_TESTS
from pytest_jumpstarter.records import RanTest
from pytest_jumpstarter.timeline import command_line

if TYPE_CHECKING:
    from pytest_jumpstarter.lab import Lab
    from pytest_jumpstarter.timeline import Timeline

QUARANTINED = "jumpstarter_quarantined"  # key of xdist's workerinput: the boards kept out


class History:
    def __init__(self, lab: Lab, timeline: Timeline) -> None:
        self.lab = lab
        self.timeline = timeline
        self.path = lab.path("history")
        self.started = time.time()
        self.quarantined: dict[str, str] = {}  # board -> why
        self.header: list[str] = []
        self.said = ""  # the end-of-run line
        controller = lab.workerid is None
        if lab.values["quarantine"] and self.path is None:
            raise pytest.UsageError(
                f"jumpstarter: --jumpstarter-quarantine ({lab.values.sources['quarantine']}) keeps the boards a "
                "history flags out of the run: give the history too, --jumpstarter-history FILE.db"
            )
        options = lab.config.option
        if self.path is not None and any(getattr(options, name, False) for name in NO_TESTS):
            self.path = None  # --collect-only, --help...: no run to record
        if self.path is None:
            return
        if controller:
            try:
                runs = check(self.path)
            except HistoryError as exc:
                raise pytest.UsageError(f"jumpstarter: --jumpstarter-history: {exc}") from None
            self.header.append(f"jumpstarter: history {self.path} ({runs} runs so far)")
            if lab.values["quarantine"]:
                self._quarantine()
        else:
            self.quarantined = dict(getattr(lab.config, "workerinput", {}).get(QUARANTINED, {}))
        if lab.pool is not None:
            lab.pool.avoid = frozenset(self.quarantined)

    def _quarantine(self) -> None:
        from jumpstarter.history.health import analyse

        assert self.path is not None
        try:
            health = analyse(self.path)
        except HistoryError as exc:
            raise pytest.UsageError(f"jumpstarter: --jumpstarter-quarantine: {exc}") from None
        ours = {e.name for e in self.lab.exporters}
        self.quarantined = {b.name: b.why() for b in health.flagged if b.name in ours}
        if not self.quarantined:
            self.header.append(f"jumpstarter: quarantine: no board of this run is a suspect ({health.runs} runs read)")
        for name, why in self.quarantined.items():
            self.header.append(
                f"jumpstarter: quarantine: {name} is kept out of this run unless no other board fits a test: {why}"
            )

    def pytest_report_header(self) -> list[str]:
        return self.header

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[QUARANTINED] = self.quarantined

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.path is None or self.lab.workerid is not None:
            return
        record = self.record(session, int(exitstatus))
        try:
            number = append(self.path, record)
        except HistoryError as exc:
            self.said = f"history: nothing written: {exc}"
            return
        self.said = f"history: run {number} appended to {self.path} ({len(record.results)} results)"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.said:
            terminalreporter.write_line(f"jumpstarter: {self.said}", red=self.said.startswith("history: nothing"))

    def record(self, session: pytest.Session, status: int) -> RunRecord:
        """This run as the history keeps it: every text redacted."""
        matrix = bool(self.lab.values["matrix"])
        tests = self.timeline.tests.values()
        out = {board for test in tests if test.role == "health" for board, _ in test.errors}
        results = [r for test in tests for r in results_of(test, matrix, out)]
        timeline = self.timeline
        clean = Redactor([self.lab.values["passphrase"] or ""])
        clean.prepare(
            [t for r in results for t in (r.nodeid, r.key, r.exporter, r.blamed)]
            + [t for r in timeline.leases for t in (r.holder, r.test, r.error, *r.exporters)]
        )
        for result in results:
            result.nodeid, result.key, result.exporter = clean(result.nodeid), clean(result.key), clean(result.exporter)
            result.blamed = clean(result.blamed)
        passed_on: dict[str, set[str]] = {}
        for result in results:
            if result.outcome == "passed":
                passed_on.setdefault(result.key, set()).add(result.exporter)
        for result in results:
            if result.outcome in BROKEN and result.exporter:
                result.elsewhere = bool(passed_on.get(result.key, set()) - {result.exporter, ""})
        leases = [
            Held(
                clean(r.holder),
                clean(r.test),
                ",".join(clean(e) for e in r.exporters),
                r.asked,
                r.taken,
                r.released,
                r.worker,
                clean(r.error),
            )
            for r in self.timeline.leases
        ]
        workers = {t.worker for t in self.timeline.tests.values() if t.worker}
        return RunRecord(
            started=self.started,
            finished=time.time(),
            host=socket.gethostname(),
            command=clean(command_line(session.config.invocation_params.args)),
            status=status,
            workers=len(workers),
            exporters=[clean(e.name) for e in self.lab.exporters],
            results=results,
            leases=leases,
            gone=[(clean(g.exporter), g.at, clean(g.why)) for g in self.timeline.gone.values()],
        )


class Redactor:
    """``redact`` for many short texts, each once: a run's ids and names, mostly clean, are first redacted as one
    text (six times faster); only when that finds a secret is each redacted on its own."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.done: dict[str, str] = {}

    def prepare(self, texts: list[str]) -> None:
        fresh = [t for t in dict.fromkeys(texts) if t and t not in self.done]
        together = "\n".join(fresh)
        if redact(together, self.secrets) == together:  # nothing found in the whole: nothing in any part
            self.done.update(zip(fresh, fresh, strict=True))

    def __call__(self, text: str) -> str:
        if text not in self.done:
            self.done[text] = redact(text, self.secrets) if text else text
        return self.done[text]


def results_of(test: RanTest, matrix: bool, out_of_run: Collection[str] = ()) -> list[Result]:
    """A test's rows: one per attempt and exporter it used (an attempt on several boards names them joined by
    "+": a row for each). A failed attempt on several boards whose health checks then took some of them out of
    the run is theirs: the others' rows keep the outcome and name them in ``blamed``, and count against no one.

    ``out_of_run``: the boards a health check took out anywhere in the run. The test's own ``sick`` may miss one
    under xdist (another worker was still checking it when the test ended); a board out at the run's end was out
    after this try, which it had taken part in: its check came later."""
    role, verdict = test.role or "test", test.verdict
    rows: list[tuple[int, str, str, str]] = []  # attempt number, exporter, outcome, blamed
    tries = test.attempts or [("+".join(test.exporters), test.outcome)]
    for number, (boards, outcome) in enumerate(tries, 1):
        parts = boards.split("+")
        found = [b for b in parts if b in test.sick or b in out_of_run]
        sick = found if len(parts) > 1 and outcome in BROKEN else []
        for exporter in parts:
            blamed = "+".join(sick) if sick and exporter not in sick else ""
            rows.append((number, exporter, outcome, blamed))
    return [
        Result(
            test.nodeid,
            key_of(test.nodeid, exporter) if matrix else test.nodeid,
            role,
            number,
            exporter,
            outcome,
            verdict,
            start=test.start,
            stop=test.stop,
            waited=test.waited,
            worker=test.worker,
            blamed=blamed,
        )
        for number, exporter, outcome, blamed in rows
    ]


def key_of(nodeid: str, exporter: str) -> str:
    """The test's id without the exporter matrix mode put in it, so that its runs on two boards compare:
    ``t.py::test[b1]`` and ``t.py::test[b2]`` are ``t.py::test``; ``t.py::test[3-b1]`` is ``t.py::test[3]``."""
    if not exporter or not nodeid.endswith("]") or "[" not in nodeid:
        return nodeid
    base, _, params = nodeid[:-1].partition("[")
    if params == exporter:
        return base
    for form in (f"-{exporter}", f"{exporter}-"):
        if form in params:
            return f"{base}[{params.replace(form, '', 1)}]"
    return nodeid
