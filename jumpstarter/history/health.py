"""Which boards to suspect: per board, what the history says, and a test of whether it fails too often.

A test that fails on one board and passes on others says little about the code and much about the board; one
failure may be bad luck, many are not. For each board, take its runs of the tests that passed at least once on
another board (``suspect tests``), and count how many of those runs failed (k of n). Its peers ran the same tests:
their failure rate p0 on them (smoothed, (failures + 0.5) / (runs + 1), so that peers with no failure yet don't
make one failure look impossible) is what the board would show if the board didn't matter. Under that hypothesis
k is Binomial(n, p0); the board is flagged when the exact one-sided tail P(X >= k) is below ``ALPHA`` divided by
the number of boards tested (Bonferroni: a lab of 50 boards checked every morning must not flag a healthy board
every other week), and it failed at least ``MIN_FAILURES`` such tests (two flaky failures are not a pattern).
An exact binomial rather than a normal approximation: failures are rare, n small for a new board, and the normal
tail is badly wrong there. Against the peers' rate rather than a Fisher 2x2 table: the peers have many more runs
than the board, so their rate is known well, and the binomial tail costs O(k) with the standard library alone.

A failed try on several boards whose health checks then took one of them out (``blamed``: d0 of "d0+p0") counts
against that one only: the others' rows (p0's) are left out of their tests, failures and rates, and of the peers'
counts, and shown apart (``Board.blamed``).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jumpstarter.history import DEFAULT_DAYS
from jumpstarter.history.store import BROKEN, opened

ALPHA = 0.01  # the family-wise rate of flagging a healthy board, per report
MIN_FAILURES = 3
RAN = ("passed", "failed", "error", "xpassed")  # outcomes of a test that ran to a verdict (not skipped)
OWN = "blamed = ''"  # a row that speaks of its own board (not a failure blamed on another board of its try)


@dataclass
class Board:
    """One board's record in the window, and the test's verdict on it."""

    name: str
    runs: int = 0
    tests: int = 0  # test runs on it that ran to a verdict
    failed: int = 0
    elsewhere: int = 0  # its failures that passed on another board in the same run
    blamed: int = 0  # failures of tries it shared with boards whose health check then failed: theirs, not counted
    health_passed: int = 0
    health_failed: int = 0
    last_health: tuple[str, float] | None = None  # outcome, when
    last_seen: float = 0.0
    suspect_runs: int = 0  # n: its runs of tests that passed on another board
    suspect_failed: int = 0  # k
    peer_runs: int = 0
    peer_failed: int = 0
    p_value: float = 1.0
    flagged: bool = False
    history: list[tuple[float, int, int, int]] = field(
        default_factory=list
    )  # per run: when, tests, failed, health failed

    @property
    def rate(self) -> float | None:
        return self.failed / self.tests if self.tests else None

    @property
    def peer_rate(self) -> float:
        return (self.peer_failed + 0.5) / (self.peer_runs + 1)

    def why(self) -> str:
        """The evidence, in a line."""
        return (
            f"{self.suspect_failed} of {self.suspect_runs} runs of tests that passed on other boards failed here; "
            f"{self.peer_failed} of {self.peer_runs} on the other boards (p = {self.p_value:.1e})"
        )


@dataclass
class Health:
    """The history's report: its runs in the window, and a Board for each board seen."""

    path: Path
    runs: int
    first: float
    last: float
    days: float | None
    boards: list[Board]

    @property
    def tested(self) -> int:
        return sum(1 for b in self.boards if b.suspect_runs)

    @property
    def threshold(self) -> float:
        return ALPHA / max(1, self.tested)

    @property
    def flagged(self) -> list[Board]:
        return [b for b in self.boards if b.flagged]


def analyse(path: Path, days: float | None = DEFAULT_DAYS, now: float | None = None) -> Health:
    """Read the history at ``path`` (the runs of the last ``days``; None: all) and judge each board."""
    since = ((now or time.time()) - days * 86400) if days else float("-inf")
    with opened(path) as db:
        first_run, last, runs, first = db.execute(
            "SELECT MIN(id), MAX(started), COUNT(*), MIN(started) FROM runs WHERE started >= ?", (since,)
        ).fetchone()
        first_run = first_run if first_run is not None else 1 << 62
        boards = _boards(db, first_run)
        _judge(db, first_run, boards)
        _over_time(db, first_run, boards)
    health = Health(path, runs, first or 0.0, last or 0.0, days, sorted(boards.values(), key=lambda b: b.name))
    for board in health.boards:
        board.flagged = (
            board.suspect_failed >= MIN_FAILURES
            and board.suspect_failed > board.suspect_runs * board.peer_rate
            and board.p_value < health.threshold
        )
    return health


def _boards(db: sqlite3.Connection, first_run: int) -> dict[str, Board]:
    broken, ran = _inlist(BROKEN), _inlist(RAN)
    boards: dict[str, Board] = {}
    for name, runs, tests, failed, elsewhere, blamed, hpassed, hfailed, seen in db.execute(
        f"SELECT exporter, COUNT(DISTINCT run), SUM(role = 'test' AND outcome IN {ran} AND {OWN}), "
        f"SUM(role = 'test' AND outcome IN {broken} AND {OWN}), "
        f"SUM(role = 'test' AND outcome IN {broken} AND elsewhere AND {OWN}), "
        f"SUM(role = 'test' AND outcome IN {broken} AND NOT {OWN}), "
        f"SUM(role = 'health' AND outcome = 'passed'), SUM(role = 'health' AND outcome IN {broken}), MAX(stop) "
        "FROM results WHERE run >= ? AND exporter != '' GROUP BY exporter",
        (first_run,),
    ):
        boards[name] = Board(
            name, runs, tests or 0, failed or 0, elsewhere or 0, blamed or 0, hpassed or 0, hfailed or 0
        )
        boards[name].last_seen = seen or 0.0
    for name, outcome, stop in db.execute(
        "SELECT exporter, outcome, MAX(stop) FROM results WHERE run >= ? AND role = 'health' AND exporter != '' "
        "GROUP BY exporter",
        (first_run,),
    ):
        boards[name].last_health = (outcome, stop)
    return boards


def _judge(db: sqlite3.Connection, first_run: int, boards: dict[str, Board]) -> None:
    """Count each board's runs of tests that passed on another board, and its peers' runs of the same tests."""
    by_key: dict[str, list[tuple[str, int, int]]] = {}
    for key, name, passed, failed in db.execute(
        f"SELECT key, exporter, SUM(outcome = 'passed'), SUM(outcome IN {_inlist(BROKEN)}) FROM results "
        f"WHERE run >= ? AND role = 'test' AND exporter != '' AND {OWN} GROUP BY key, exporter",
        (first_run,),
    ):
        by_key.setdefault(key, []).append((name, passed, failed))
    for rows in by_key.values():
        passers = [name for name, passed, _ in rows if passed]
        if not passers:
            continue  # fails everywhere: the code's, or nobody's business here
        all_runs = sum(p + f for _, p, f in rows)
        all_failed = sum(f for _, _, f in rows)
        for name, passed, failed in rows:
            if len(passers) == 1 and passers[0] == name:
                continue  # passed only here: nothing to compare this board with
            board = boards[name]
            board.suspect_runs += passed + failed
            board.suspect_failed += failed
            board.peer_runs += all_runs - passed - failed
            board.peer_failed += all_failed - failed
    for board in boards.values():
        board.p_value = binomial_tail(board.suspect_failed, board.suspect_runs, board.peer_rate)


def _over_time(db: sqlite3.Connection, first_run: int, boards: dict[str, Board]) -> None:
    for name, started, tests, failed, hfailed in db.execute(
        f"SELECT exporter, runs.started, SUM(role = 'test' AND outcome IN {_inlist(RAN)} AND {OWN}), "
        f"SUM(role = 'test' AND outcome IN {_inlist(BROKEN)} AND {OWN}), "
        f"SUM(role = 'health' AND outcome IN {_inlist(BROKEN)}) "
        "FROM results JOIN runs ON runs.id = results.run WHERE run >= ? AND exporter != '' "
        "GROUP BY exporter, run ORDER BY run",
        (first_run,),
    ):
        boards[name].history.append((started, tests or 0, failed or 0, hfailed or 0))


def _inlist(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly (summed in log space; the sum stops once terms no longer count)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)

    def term(i: int) -> float:
        return math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)

    if k <= n * p:  # the upper tail is most of the mass: 1 - the lower one, summed down from k - 1
        lower = _sum(term, range(k - 1, -1, -1))
        return max(0.0, 1.0 - lower)
    return min(1.0, _sum(term, range(k, n + 1)))


def _sum(term: Callable[[int], float], indices: range) -> float:
    """Terms that shrink away from the mode: stop once one adds nothing."""
    total = 0.0
    for i in indices:
        value = term(i)
        total += value
        if value < total * 1e-17:
            break
    return total


def report(health: Health) -> list[str]:
    """The terminal's table, a line per board, then the flagged boards and how they were judged."""
    window = f"last {health.days:g} days" if health.days else "all runs"
    if not health.runs:
        return [f"{health.path}: no run recorded ({window})"]
    lines = [
        f"{health.path}: {health.runs} runs from {when(health.first)} to {when(health.last)} ({window}); "
        f"{len(health.boards)} boards"
    ]
    header = (
        "board", "runs", "tests", "failed", "rate", "passed elsewhere", "partner sick", "health checks", "last seen", ""
    )  # fmt: skip
    rows = [
        (
            b.name,
            str(b.runs),
            str(b.tests),
            str(b.failed),
            "n/a" if b.rate is None else f"{b.rate:.0%}",
            str(b.elsewhere),
            str(b.blamed),
            _health(b),
            when(b.last_seen),
            "SUSPECT" if b.flagged else "",
        )
        for b in health.boards
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = [
            c.ljust(w) if i in (0, 7, 8, 9) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    for board in health.flagged:
        lines.append(f"SUSPECT {board.name}: {board.why()}")
    lines.append(
        f"suspects: exact one-sided binomial test of each board's failures on tests that passed on another board, "
        f"against its peers' failure rate on the same tests; flagged when p < {health.threshold:.1e} "
        f"({ALPHA:g} / {health.tested} boards, Bonferroni) with at least {MIN_FAILURES} such failures"
        + ("" if health.flagged else ": none flagged")
    )
    return lines


def _health(board: Board) -> str:
    total = board.health_passed + board.health_failed
    if not total:
        return "none"
    last = board.last_health
    tail = f"; last {last[0]} {when(last[1])}" if last else ""
    return f"{board.health_failed} of {total} failed{tail}"


def when(at: float) -> str:
    """A moment as the report shows it: local time to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else "never"
