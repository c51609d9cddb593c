"""The health report over time, as one self-contained HTML page (the timeline's frame and styling, ``pages``).

A row per board; along it, a cell per stretch of time (``SLOTS`` of them from the first run in the window to the
last) coloured by the board's failure rate there, grey where it ran nothing, marked where a health check failed;
counts in each cell's tooltip. Suspect boards are named in red. Under the chart, the report's table.
"""

from __future__ import annotations

from html import escape

from jumpstarter.common import pages
from jumpstarter.history.health import ALPHA, MIN_FAILURES, Board, Health, when

LABEL_WIDTH, PLOT_WIDTH, RIGHT = 170, 960, 20
AXIS_HEIGHT, ROW_HEIGHT, CELL_TOP, CELL_HEIGHT = 28, 30, 5, 20
SLOTS = 240  # cells per row at most: runs closer in time than a cell share it
IDLE, HEALTHY, SICK, CHECK_FAILED = "#e3e6ea", "#2f9e50", "#d93f3f", "#222"

CSS = """
.cell { stroke: #fff; stroke-width: 0.5; }
.suspect .name { fill: #b3261e; }
.mark { fill: #222; font-size: 10px; }
tr.suspect td { color: #b3261e; font-weight: bold; }
"""


def render(health: Health) -> str:
    """The whole page: well-formed XML too, so tests can parse it."""
    width = LABEL_WIDTH + PLOT_WIDTH + RIGHT
    height = AXIS_HEIGHT + ROW_HEIGHT * max(1, len(health.boards)) + 1
    window = f"last {health.days:g} days" if health.days else "all runs"
    meta = f"{health.path} · {health.runs} runs · {len(health.boards)} boards · {window}"
    if health.runs:
        meta += f" · {when(health.first)} to {when(health.last)}"
    out = [
        pages.head("jumpstarter health", meta, CSS),
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">\n',
        _axis(health, height),
    ]
    for index, board in enumerate(health.boards):
        out.append(_row(health, board, index, AXIS_HEIGHT + index * ROW_HEIGHT))
    if not health.boards:
        out.append(f'<text class="stats" x="8" y="{AXIS_HEIGHT + 20}">no board recorded</text>\n')
    out.append("</svg>\n")
    out.append(_legend())
    out.append(_table(health))
    out.append(pages.FOOT)
    return "".join(out)


def _slot(health: Health, at: float) -> int:
    span = health.last - health.first
    return 0 if span <= 0 else min(SLOTS - 1, int((at - health.first) / span * SLOTS))


def _slots(health: Health) -> int:
    return 1 if health.last <= health.first else SLOTS


def _axis(health: Health, height: int) -> str:
    out = ['<g class="axis">\n']
    for tick in range(5 if health.last > health.first else 1):
        at = health.first + (health.last - health.first) * tick / 4
        x = LABEL_WIDTH + PLOT_WIDTH * tick / 4
        out.append(f'<line class="tick" x1="{x:.1f}" y1="{AXIS_HEIGHT - 6}" x2="{x:.1f}" y2="{height}"/>')
        out.append(f'<text class="ticklabel" x="{x + 3:.1f}" y="{AXIS_HEIGHT - 10}">{when(at)}</text>\n')
    out.append("</g>\n")
    return "".join(out)


def _row(health: Health, board: Board, index: int, top: int) -> str:
    classes = f"row {'odd' if index % 2 else 'even'}" + (" suspect" if board.flagged else "")
    name = board.name + (" (suspect)" if board.flagged else "")
    out = [
        f'<g class="{classes}" data-board="{escape(board.name)}" data-flagged="{str(board.flagged).lower()}">\n',
        f'<rect class="band" x="0" y="{top}" width="{LABEL_WIDTH + PLOT_WIDTH + RIGHT}" height="{ROW_HEIGHT}"/>\n',
        f'<text class="name" x="8" y="{top + 19}">{escape(pages.fit(name, 22))}</text>\n',
    ]
    cells: dict[int, list[int]] = {}  # slot -> runs, tests, failed, health checks failed
    first_seen: dict[int, float] = {}
    for started, tests, failed, health_failed in board.history:
        slot = _slot(health, started)
        counts = cells.setdefault(slot, [0, 0, 0, 0])
        first_seen.setdefault(slot, started)
        for i, value in enumerate((1, tests, failed, health_failed)):
            counts[i] += value
    step = PLOT_WIDTH / _slots(health)
    for slot, (runs, tests, failed, health_failed) in sorted(cells.items()):
        x = LABEL_WIDTH + slot * step
        tip = f"{board.name} from {when(first_seen[slot])}: {runs} runs, {failed} of {tests} tests failed" + (
            f", {health_failed} health checks failed" if health_failed else ""
        )
        out.append(
            f'<g class="slot" data-failed="{failed}" data-tests="{tests}" data-health-failed="{health_failed}">'
            f"<title>{escape(tip)}</title>"
            f'<rect class="cell" x="{x:.1f}" y="{top + CELL_TOP}" width="{max(step, 2.0):.1f}" '
            f'height="{CELL_HEIGHT}" fill="{_colour(tests, failed)}"/>'
            + (f'<text class="mark" x="{x + 1:.1f}" y="{top + CELL_TOP + 9}">✕</text>' if health_failed else "")
            + "</g>\n"
        )
    out.append("</g>\n")
    return "".join(out)


def _colour(tests: int, failed: int) -> str:
    """Green for no failure, to red for all failed; grey for nothing run."""
    if not tests:
        return IDLE
    share = failed / tests
    if not share:
        return HEALTHY
    mix = 0.35 + 0.65 * share  # any failure shows clearly
    green, red = (int(HEALTHY[i : i + 2], 16) for i in (1, 3, 5)), (int(SICK[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(g + (r - g) * mix):02x}" for g, r in zip(green, red, strict=True))


def _legend() -> str:
    items = [
        f'<span><i style="background:{HEALTHY}"></i>no test failed</span>',
        f'<span><i style="background:{_colour(4, 1)}"></i>some failed</span>',
        f'<span><i style="background:{SICK}"></i>all failed</span>',
        f'<span><i style="background:{IDLE}"></i>nothing run</span>',
        "<span>✕ a health check failed</span>",
    ]
    return f'<div class="legend">{"".join(items)}</div>\n'


def _table(health: Health) -> str:
    out = [
        '<table class="usage">\n<tr><th>board</th><th>runs</th><th>tests</th><th>failed</th><th>rate</th>'
        "<th>passed elsewhere</th><th>partner sick</th><th>health checks failed</th><th>last seen</th><th>p</th></tr>\n"
    ]
    for b in health.boards:
        rate = "n/a" if b.rate is None else f"{b.rate:.0%}"
        checks = b.health_passed + b.health_failed
        suspect = ' class="suspect"' if b.flagged else ""
        out.append(
            f'<tr data-board="{escape(b.name)}"{suspect}><td>{escape(b.name)}</td>'
            f"<td>{b.runs}</td><td>{b.tests}</td><td>{b.failed}</td><td>{rate}</td><td>{b.elsewhere}</td>"
            f"<td>{b.blamed}</td>"
            f"<td>{b.health_failed} of {checks}</td><td>{when(b.last_seen)}</td><td>{b.p_value:.1e}</td></tr>\n"
        )
    out.append("</table>\n")
    for board in health.flagged:
        out.append(f'<p class="advice">suspect: {escape(board.name)}: {escape(board.why())}</p>\n')
    out.append(
        f'<p class="meta">suspects: exact one-sided binomial test, flagged when p &lt; {health.threshold:.1e} '
        f"({ALPHA:g} / {health.tested} boards) with at least {MIN_FAILURES} failures of tests that passed on "
        "another board</p>\n"
    )
    return "".join(out)
