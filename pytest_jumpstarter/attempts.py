"""A test's tries: its boards checked first, and, with ``--jumpstarter-retry-elsewhere N``, run again elsewhere.

With health checks or retries on, a test's leases are taken before its set-up (its fixtures then use them,
``leasing.Preclaim``), so that a board new to the run, or one a test just failed on, has its health checks run
first (``health``). A test that fails (or errors) on a board runs again, up to N times, each time on a fitting
board it hasn't failed on, waiting for one as any test does; not where no other board fits, nor in matrix mode
(each test runs on every board there already). When it then passes, it runs once more on each single board it
failed on (a check-back, not a retry): failing there again makes that board the suspect (verdict "board"),
passing there makes the test "flaky". Failing on every board tried is the code's ("code"). A try on several boards
has no check-back: the boards' health checks, run again after any failure, say which of them is the suspect
(``records.suspects``).

The tries' reports are logged when the test is done: the deciding try's as they are (a test that failed on one
board and passed on another passes; one that fails everywhere fails), the others' failures and passes as
"retried", which fail nothing (nor leave a junit XML testcase of their own: ``junit``). The deciding try's last
report carries the role, attempts and verdict (``records.RUN_ATTRIBUTE``) to where reports are gathered, through
xdist as any report attribute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_jumpstarter import junit
from pytest_jumpstarter.health import error_line, is_health, log, protocol, target
from pytest_jumpstarter.leasing import CLAIMS, PRECLAIM, Preclaim
from pytest_jumpstarter.records import BROKEN, OUTCOME_RANK, RETRIED, RUN_ATTRIBUTE, SICK, outcome_of, verdict

if TYPE_CHECKING:
    from pytest_jumpstarter.boardstate import BoardState
    from pytest_jumpstarter.health import Checks
    from pytest_jumpstarter.lab import Lab
    from pytest_jumpstarter.leasing import Leasing
    from pytest_jumpstarter.pool import Needs


@dataclass
class Attempt:
    boards: str  # the exporters it ran on, "+"-joined ("" when it got none)
    reports: list[pytest.TestReport] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        outcomes = [outcome_of(r) for r in self.reports]
        return max(outcomes, key=OUTCOME_RANK.__getitem__, default="passed")

    @property
    def broken(self) -> bool:
        return self.outcome in BROKEN


class Attempts:
    def __init__(self, lab: Lab, leasing: Leasing, checks: Checks, state: BoardState, retries: int) -> None:
        self.lab, self.leasing, self.checks, self.state = lab, leasing, checks, state
        self.retries = retries

    def pytest_report_header(self) -> list[str]:
        lines = []
        if self.retries and self.lab.values["matrix"]:
            lines.append(
                f"jumpstarter: --jumpstarter-retry-elsewhere {self.retries} does nothing with --exporter-matrix: "
                "each test runs on every fitting board already, so there is no elsewhere"
            )
        if self.retries and self.lab.scope != "function":
            lines.append(
                f"jumpstarter: --jumpstarter-retry-elsewhere and health checks need --lease-scope function: with "
                f"{self.lab.scope}, a lease spans many tests, and they are off"
            )
        return lines

    def pytest_report_teststatus(self, report: pytest.TestReport) -> tuple[str, str, Any] | None:
        if report.outcome == RETRIED:
            return RETRIED, "R", ("RETRIED", {"yellow": True})
        if report.outcome == SICK:
            return SICK, "H", ("SICK BOARD", {"red": True})
        return None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        if report.failed and self.checks and not is_health(item, self.checks.named):
            for claim in item.stash.get(CLAIMS, {}).values():
                for exporter in claim.chosen.values():  # still leased: no one else starts a test on it unchecked
                    self.state.suspect(exporter.name)
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if self.lab.pool is None or self.lab.scope != "function" or not (self.checks or self.retries):
            return None
        if self.checks and is_health(item, self.checks.named):  # its turn in the schedule: check its board if due
            board = target(item)
            if board is not None and self.state.begin(board) == "mine":
                self.checks.check(board, nextitem)
            item.session._setupstate.teardown_exact(nextitem)  # the last test was torn down to this one's needs
            return True
        needs = self.leasing.needs_of(item)
        if not needs:
            return None
        pinned = target(item)
        retries = 0 if pinned is not None else self.retries
        tries: list[Attempt] = []
        avoid: set[str] = set()
        while True:
            attempt = self._once(item, nextitem, needs, pinned, frozenset(avoid))
            tries.append(attempt)
            if not attempt.broken or not attempt.boards:
                break
            boards = attempt.boards.split("+")
            self._recheck(boards, item)
            avoid.update(boards)
            if len(tries) > retries or not self._fits(needs, pinned, frozenset(avoid)):
                break
        deciding = len(tries) - 1
        if len(tries) > 1 and not tries[-1].broken:
            out = self.state.out()
            gone = {e.name for e in self.lab.exporters if e.failure() is not None}
            for board in dict.fromkeys(a.boards for a in tries if a.broken):
                if board and "+" not in board and board not in out and board not in gone:  # a check-back
                    tries.append(self._once(item, nextitem, needs, board, frozenset()))
        self._log(item, tries, deciding)
        item.session._setupstate.teardown_exact(nextitem)  # checks may have run last: ready for the next test
        return True

    def _once(
        self, item: pytest.Item, nextitem: pytest.Item | None, needs: Needs, pinned: str | None, avoid: frozenset[str]
    ) -> Attempt:
        pre = self._preclaim(item, needs, pinned, avoid)
        if pre is not None:
            item.stash[PRECLAIM] = pre
        try:
            reports = protocol(item, nextitem)
        finally:
            left = item.stash.get(PRECLAIM, None)
            if left is not None:  # set-up failed before the fixtures took it
                del item.stash[PRECLAIM]
                if left.claim is not None:
                    left.claim.release()
        chosen = pre.claim.chosen.values() if pre is not None and pre.claim is not None else ()
        return Attempt("+".join(dict.fromkeys(e.name for e in chosen)), reports)

    def _preclaim(self, item: pytest.Item, needs: Needs, pinned: str | None, avoid: frozenset[str]) -> Preclaim | None:
        """The test's leases, on boards whose checks passed (running them first where due); None: let the
        fixtures claim, and fail, as they would (a bad marker)."""
        from pytest_jumpstarter.pool import ClaimError

        assert self.lab.pool is not None
        try:
            timeout = self.lab.values.seconds("lease_timeout", item)
        except (pytest.fail.Exception, pytest.UsageError):
            return None
        holder, asked = f"{self.lab.holder}: {item.nodeid}", time.time()
        while True:
            try:
                claim = self.lab.pool.claim(
                    needs, holder, timeout, pinned=pinned, notify=self.leasing.notify, avoid=avoid
                )
            except ClaimError as exc:
                return Preclaim(None, asked, str(exc), exc.waited_for, exc.queued, exc.queued_behind)
            try:
                begun = {e.name: self.state.begin(e.name) if self.checks else "ok" for e in claim.chosen.values()}
            except BaseException:
                claim.release()
                raise
            if all(b == "ok" for b in begun.values()):
                return Preclaim(claim, asked)
            claim.release()
            for board, begin in begun.items():
                if begin == "mine":
                    self.checks.check(board, item)
            if "busy" in begun.values():
                time.sleep(0.05)  # claimed in the moment another began checking it: the pool passes it by now

    def _recheck(self, boards: list[str], item: pytest.Item) -> None:
        """After a failure: the boards' checks again, unless another process is at it or did it already."""
        if not self.checks:
            return
        for board in boards:
            if self.state.begin(board) == "mine":
                self.checks.check(board, item)

    def _fits(self, needs: Needs, pinned: str | None, avoid: frozenset[str]) -> bool:
        """Whether another board, neither avoided nor out nor gone, could serve the test."""
        assert self.lab.pool is not None
        out = self.state.out() if self.checks else {}
        return all(
            any(e.failure() is None and e.name not in out for e in self.lab.pool.candidates(x, lb, pinned, avoid))
            for x, lb in needs.items()
        )

    def _log(self, item: pytest.Item, tries: list[Attempt], deciding: int) -> None:
        if not tries[deciding].broken:
            deciding = max(i for i, a in enumerate(tries[: deciding + 1]) if not a.broken)
        attempts = [(a.boards, a.outcome) for a in tries]
        out = set(self.state.out()) if self.checks else set()
        run = {
            "role": "test",
            "attempts": attempts,
            "verdict": verdict(attempts, out),
            "outcome": tries[deciding].outcome,
            "errors": [(a.boards, error_line(r)) for a in tries for r in a.reports if r.failed],
            "sick": sorted({b for a in tries if a.broken for b in a.boards.split("+") if b in out}),
        }
        reports = []
        for index, attempt in enumerate(tries):
            if index == deciding:
                continue
            for report in attempt.reports:
                if report.failed or (report.when == "call" and report.passed):
                    report.outcome = RETRIED  # type: ignore[assignment]
                junit.mark_retried(report)
                reports.append(report)
        reports += tries[deciding].reports
        setattr(reports[-1], RUN_ATTRIBUTE, run)
        if len(tries) > 1:
            junit.describe(reports[-1], run)
        log(item, reports)
