"""The timeline as one HTML file: inline CSS and SVG, no script, nothing fetched, so it opens from disk anywhere.

A row per exporter; a bar per lease from take to release, coloured by the test's outcome and labelled with its id
(the full id and the durations in the bar's tooltip); under it, a striped band for the time a test waited for that
exporter, with the tests that held it meanwhile in its tooltip; a red mark where an exporter died or went away.
In a lab's run (``--lab``) the rows are its places, and a claim's wait starts with a stripe of its own: the time
it queued at the labgrid coordinator, before the place was allocated and its exporter leased.
The page's geometry is fixed (``PAGE_LEFT``, ``PAGE_TOP`` and the rows' ``data-top``/``data-height``), so a test
can find each row in a screenshot.
"""

from __future__ import annotations

import time
from html import escape

from jumpstarter.common import pages
from jumpstarter.common.pages import fit, seconds
from pytest_jumpstarter.records import BROKEN, NOTICEABLE_WAIT, OUTCOME_RANK, LeaseRecord, RanTest, Run, Usage

PAGE_LEFT, PAGE_TOP = 16, 72  # where the chart's top left corner is on the page, in CSS pixels
LABEL_WIDTH, PLOT_WIDTH, RIGHT = 170, 960, 20
AXIS_HEIGHT, ROW_HEIGHT = 28, 44  # a row is taller when tests waited for its exporter at the same time
BAR_TOP, BAR_HEIGHT = 6, 24  # within a row
WAIT_TOP, WAIT_HEIGHT, WAIT_LANE = 35, 7, 9  # the waits under the bars, a lane each while they overlap
CHAR_WIDTH = 6.2  # of the bars' labels, about
DRAWN_WAIT = 0.01  # seconds: shorter waits (the lease call itself) are not drawn
NO_EXPORTER = "(no exporter)"  # the row of claims that got none
NO_PLACE = "(no place)"  # and in a lab's run: those that timed out in the coordinator's queue show it as queued
COLOURS = {  # outcome -> the fill of its bars
    "passed": "#2f9e50",
    "failed": "#d93f3f",
    "error": "#e8871e",
    "skipped": "#9aa1a9",
    "xfailed": "#9b8ad6",
    "xpassed": "#c9a800",
    "unknown": "#5d6d7e",
    "health": "#2b7bb9",  # a board's health check that passed
    "sick": "#7a1f5c",  # one that failed: the board is out of the run
}
WAIT_COLOUR, GONE_COLOUR, HOOK_COLOUR, QUEUE_COLOUR = "#f0a020", "#b3261e", "#7b5cc4", "#3b7dd8"

CSS = """
.bar { stroke: #fff; stroke-width: 1; }
.label { font-size: 11px; fill: #fff; }
.held { fill: #e3e9f3; stroke: #6b86b3; stroke-width: 1; }
.heldlabel { font-size: 10px; fill: #34495e; }
.wait { fill: url(#waiting); stroke: #c77c00; stroke-width: 0.5; }
.queue { fill: url(#queueing); stroke: #2a5da8; stroke-width: 0.5; }
.dead { fill: url(#dead); }
.hook rect { fill: #7b5cc4; } .hook.failed rect { fill: #b3261e; }
.gone line { stroke: #b3261e; stroke-width: 2; }
.gone text { fill: #b3261e; font-size: 12px; font-weight: bold; }
"""  # the timeline's own, after pages.CSS


def render(run: Run, title: str = "") -> str:
    """The whole page for ``run``: well-formed XML too, so tests can parse it."""
    rows = run.rows()
    unleased = run.unleased()
    if unleased:
        rows.append(NO_PLACE if run.lab else NO_EXPORTER)
    first, last = run.phase()
    times = [t for r in run.leases for t in (r.asked, r.taken, r.released) if t] + [g.at for g in run.gone.values()]
    start = min([first, *times]) if first or times else time.time()
    end = max([last, *times]) if last or times else start
    scale = Scale(start, end)
    usages = {u.name: u for u in run.usage()}
    waits = {name: _waits(run, name, unleased) for name in rows}
    heights = {
        name: max(ROW_HEIGHT, WAIT_TOP + WAIT_LANE * (max(waits[name].values(), default=-1) + 1) + 2) for name in rows
    }
    height = AXIS_HEIGHT + (sum(heights.values()) if rows else ROW_HEIGHT) + 1
    width = LABEL_WIDTH + PLOT_WIDTH + RIGHT
    out = [
        pages.head("jumpstarter timeline", _meta(run, first, last, title), CSS),
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" data-left="{PAGE_LEFT}" data-top="{PAGE_TOP}">\n',
        _defs(),
        _axis(scale, height),
    ]
    top = AXIS_HEIGHT
    for index, name in enumerate(rows):
        out.append(_row(run, name, index, top, heights[name], scale, usages.get(name), waits[name]))
        top += heights[name]
    if not rows:
        out.append(f'<text class="stats" x="8" y="{AXIS_HEIGHT + 26}">no test used an exporter</text>\n')
    out.append("</svg>\n")
    out.append(_legend(bool(run.lab)))
    out.append(_table(run, list(usages.values()), first))
    out.append(pages.FOOT)
    return "".join(out)


class Scale:
    """Wall-clock seconds to x in the chart."""

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.span = max(end - start, 1e-3)

    def x(self, t: float) -> float:
        return LABEL_WIDTH + (t - self.start) / self.span * PLOT_WIDTH

    def rel(self, t: float) -> str:
        return f"+{t - self.start:.2f} s"


def _meta(run: Run, first: float, last: float, title: str) -> str:
    tests = [t for t in run.tests.values() if t.exporters]
    workers = {t.worker for t in run.tests.values() if t.worker}
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first)) if first else "no test ran"
    rows = f"{len(run.rows())} places of labgrid://{run.lab}" if run.lab else f"{len(run.rows())} exporters"
    parts = [when, f"test phase {last - first:.1f} s", f"{len(tests)} tests on {rows}"]
    if workers:
        parts.append(f"{len(workers)} xdist workers")
    return " · ".join(parts + ([title] if title else []))


def _defs() -> str:
    return (
        "<defs>\n"
        '<pattern id="waiting" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="#fde7b8"/><rect width="3" height="6" fill="{WAIT_COLOUR}"/></pattern>\n'
        '<pattern id="dead" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        f'<rect width="8" height="8" fill="#fbecea"/><rect width="2" height="8" fill="#efc3bf"/></pattern>\n'
        '<pattern id="queueing" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)">'
        f'<rect width="6" height="6" fill="#d6e4f7"/><rect width="3" height="6" fill="{QUEUE_COLOUR}"/></pattern>\n'
        "</defs>\n"
    )


def _axis(scale: Scale, height: int) -> str:
    step = next((s for s in STEPS if scale.span / s <= 10), scale.span / 10)
    out = ['<g class="axis">\n']
    tick = 0.0
    while tick <= scale.span + 1e-9:
        x = scale.x(scale.start + tick)
        out.append(f'<line class="tick" x1="{x:.1f}" y1="{AXIS_HEIGHT - 6}" x2="{x:.1f}" y2="{height}"/>')
        out.append(f'<text class="ticklabel" x="{x + 3:.1f}" y="{AXIS_HEIGHT - 10}">{_clock(tick, step)}</text>\n')
        tick += step
    out.append("</g>\n")
    return "".join(out)


STEPS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


def _clock(seconds: float, step: float) -> str:
    if step >= 60:
        return f"{int(seconds // 60)} min"
    return f"{seconds:.{0 if step >= 1 else 1 if step >= 0.1 else 2}f} s"


def _waits(run: Run, name: str, unleased: list[LeaseRecord]) -> dict[int, int]:
    """The waits drawn in a row, each with its lane (id of the record -> lane): a claim's wait shows on the rows
    of the exporters it got and had found busy (or all it got); claims that got none, on their own row."""
    if name in (NO_EXPORTER, NO_PLACE):
        drawn = unleased
    else:
        drawn = [
            r
            for r in run.leases
            if name in r.exporters
            and r.taken is not None
            and r.waited >= DRAWN_WAIT
            and name in (set(r.exporters) & set(r.waited_for) or r.exporters)
        ]
    lanes: dict[int, int] = {}
    ends: list[float] = []  # per lane, when its last wait ended
    for record in sorted(drawn, key=lambda r: r.asked):
        end = record.taken or record.released or record.asked
        lane = next((i for i, e in enumerate(ends) if e <= record.asked), len(ends))
        ends[lane : lane + 1] = [end]
        lanes[id(record)] = lane
    return lanes


def _row(
    run: Run, name: str, index: int, top: int, height: int, scale: Scale, usage: Usage | None, waits: dict[int, int]
) -> str:
    parity = "odd" if index % 2 else "even"
    out = [
        f'<g class="row {parity}" data-exporter="{escape(name)}" data-top="{top}" data-height="{height}">\n',
        f'<rect class="band" x="0" y="{top}" width="{LABEL_WIDTH + PLOT_WIDTH + RIGHT}" height="{height}"/>\n',
        f'<text class="name" x="8" y="{top + 18}">{escape(fit(name, 20))}</text>\n',
    ]
    if usage is not None:
        util = "n/a" if usage.utilization is None else f"{usage.utilization:.0%}"
        stats = f"{usage.tests} tests · {util} busy" + (f" · {usage.failures} failed" if usage.failures else "")
        out.append(f'<text class="stats" x="8" y="{top + 34}">{escape(stats)}</text>\n')
    gone = run.gone.get(name)
    if gone is not None:  # the rest of the row is dead ground
        x = scale.x(gone.at)
        out.append(
            f'<rect class="dead" x="{x:.1f}" y="{top + 1}" width="{max(0.0, LABEL_WIDTH + PLOT_WIDTH - x):.1f}" '
            f'height="{height - 2}"/>\n'
        )
    if name in (NO_EXPORTER, NO_PLACE):
        for record in run.unleased():
            lane = top + WAIT_LANE * waits[id(record)]
            if record.queued >= DRAWN_WAIT:  # timed out in the lab's queue: queue time, behind the places held
                out.append(_queue(run, record, name, scale, lane, unleased=True))
            if record.queued < DRAWN_WAIT or record.waited - record.queued >= NOTICEABLE_WAIT:
                out.append(_wait(record, name, scale, lane, [], unleased=True))
        out.append("</g>\n")
        return "".join(out)
    leases = [r for r in run.leases if name in r.exporters and r.taken is not None]
    for record in leases:
        if id(record) in waits:
            lane = top + WAIT_LANE * waits[id(record)]
            if record.queued_on(name) >= DRAWN_WAIT:  # at the coordinator, before the exporter's own wait
                out.append(_queue(run, record, name, scale, lane))
            if record.waited - record.queued >= DRAWN_WAIT:
                out.append(_wait(record, name, scale, lane, leases))
    for record in leases:
        out.append(_lease(run, record, name, scale, top))
    for record in run.leases:  # the exporter's hooks the claims waited for: a stripe of their own
        out.extend(_hook(record, hook, scale, top) for hook in record.hooks if hook["exporter"] == name)
    if gone is not None:
        x = scale.x(gone.at)
        why = f"{name} {gone.what} at {scale.rel(gone.at)}:\n{gone.why}"
        out.append(
            f'<g class="gone" data-exporter="{escape(name)}" data-at="{gone.at:.3f}"><title>{escape(why)}</title>'
            f'<line x1="{x:.1f}" y1="{top + 2}" x2="{x:.1f}" y2="{top + height - 2}"/>'
            f'<text x="{x + 4:.1f}" y="{top + 14}">✕ {gone.what}</text></g>\n'
        )
    out.append("</g>\n")
    return "".join(out)


def _lease(run: Run, record: LeaseRecord, exporter: str, scale: Scale, top: int) -> str:
    """One lease: the test's bar, or, for a module or session lease, the lease with its tests' bars inside."""
    x1, x2 = scale.x(record.taken or record.asked), scale.x(record.released or scale.start + scale.span)
    width = max(x2 - x1, 1.5)
    y = top + BAR_TOP
    held = seconds((record.released or record.taken or 0) - (record.taken or 0))
    others = [e for e in record.exporters if e != exporter]
    also = f"\nalso on {', '.join(others)}" if others else ""
    worker = f" ({record.worker})" if record.worker else ""
    test = run.tests.get(record.holder)
    queued = f"queued {seconds(record.queued_on(exporter))} at the labgrid coordinator, " if record.places else ""
    if test is not None:
        outcome = _outcome(run, record, test)
        tip = (
            f"{test.nodeid}\n{outcome} on {exporter}{worker}{also}\n"
            f"{queued}waited {seconds(record.waited_on(exporter))}{record.reaching(exporter)}, held {held} "
            f"({scale.rel(record.taken or 0)} to "
            f"{scale.rel(record.released or 0)}), test {seconds(test.stop - test.start)}"
        )
        return (
            f'<g class="lease {outcome}" data-test="{escape(test.nodeid)}" data-outcome="{outcome}" '
            f'data-exporter="{escape(exporter)}"><title>{escape(tip)}</title>'
            f'<rect class="bar" x="{x1:.1f}" y="{y}" width="{width:.1f}" height="{BAR_HEIGHT}" '
            f'fill="{COLOURS[outcome]}"/>{_label(test.nodeid, x1, y, width)}</g>\n'
        )
    # A module's or the session's lease: the tests that ran under it (on this worker) inside it.
    inside = [
        t
        for t in run.tests.values()
        if exporter in t.exporters
        and t.worker == record.worker
        and t.start < (record.released or float("inf"))
        and t.stop > (record.taken or 0)
    ]
    outcome = max((t.outcome for t in inside), key=OUTCOME_RANK.__getitem__, default="unknown")
    holder = record.holder or "session"
    tip = (
        f"{holder}: {len(inside)} tests{also}\non {exporter}{worker}, "
        f"{queued}waited {seconds(record.waited_on(exporter))}{record.reaching(exporter)}, held {held} "
        f"({scale.rel(record.taken or 0)} to {scale.rel(record.released or 0)})"
    )
    out = [
        f'<g class="lease scoped {outcome}" data-test="{escape(holder)}" data-outcome="{outcome}" '
        f'data-exporter="{escape(exporter)}"><title>{escape(tip)}</title>'
        f'<rect class="held" x="{x1:.1f}" y="{top + 2}" width="{width:.1f}" height="{WAIT_TOP - 3}"/>'
        f'<text class="heldlabel" x="{x1 + 3:.1f}" y="{top + WAIT_TOP - 4}">{escape(fit(holder, int(width / 6)))}'
        "</text>\n"
    ]
    for t in inside:
        out.append(_test_bar(t, exporter, scale, top, record))
    out.append("</g>\n")
    return "".join(out)


def _hook(record: LeaseRecord, hook: dict, scale: Scale, top: int) -> str:
    """A run of the exporter's beforeLease or afterLease hook that a claim waited for, over its wait."""
    x1 = scale.x(hook["started"])
    width = max(scale.x(hook["ended"]) - x1, 1.5)
    how = f"failed: {hook['failure']}" if hook["failure"] else "succeeded"
    waiter = record.test or record.holder or "session"
    tip = f"{hook['exporter']}: its {hook['hook']} hook {how} in {seconds(hook['ended'] - hook['started'])}"
    return (
        f'<g class="hook{" failed" if hook["failure"] else ""}" data-hook="{escape(hook["hook"])}" '
        f'data-exporter="{escape(hook["exporter"])}" data-test="{escape(waiter)}"><title>{escape(tip)}\n'
        f"waited for by {escape(waiter)}</title>"
        f'<rect x="{x1:.1f}" y="{top + WAIT_TOP - 3}" width="{width:.1f}" height="{WAIT_HEIGHT + 2}"/></g>\n'
    )


def _outcome(run: Run, record: LeaseRecord, test: RanTest) -> str:
    """The outcome of the try that held this lease: a test run on several boards has one per try; a health
    check's is "health" or "sick"."""
    outcome = test.outcome
    tries = [a for a in test.attempts if a[0]]  # those that got a board
    if tries:
        held = sorted((r for r in run.leases if r.holder == record.holder and r.taken is not None), key=_taken)
        index = next((i for i, r in enumerate(held) if r is record), len(tries))
        outcome = tries[index][1] if index < len(tries) else outcome
    if test.role == "health":
        return "sick" if outcome in BROKEN else "health"
    return outcome


def _taken(record: LeaseRecord) -> float:
    return record.taken or 0.0


def _test_bar(test: RanTest, exporter: str, scale: Scale, top: int, record: LeaseRecord) -> str:
    start = max(test.start, record.taken or test.start)
    stop = min(test.stop, record.released or test.stop)
    x1 = scale.x(start)
    width = max(scale.x(stop) - x1, 1.5)
    y = top + BAR_TOP
    tip = f"{test.nodeid}\n{test.outcome} on {exporter}, test {seconds(test.stop - test.start)}"
    return (
        f'<g class="test {test.outcome}" data-test="{escape(test.nodeid)}" data-outcome="{test.outcome}">'
        f"<title>{escape(tip)}</title>"
        f'<rect class="bar" x="{x1:.1f}" y="{y}" width="{width:.1f}" height="{BAR_HEIGHT - 6}" '
        f'fill="{COLOURS[test.outcome]}"/>{_label(test.nodeid, x1, y, width, BAR_HEIGHT - 6)}</g>\n'
    )


def _wait(
    record: LeaseRecord, exporter: str, scale: Scale, top: int, leases: list[LeaseRecord], unleased: bool = False
) -> str:
    """The time a claim waited, under the bars of those who held the exporter meanwhile (in a lab's run, after it
    queued at the coordinator: a place's exporter can be leased outside the lab's queue)."""
    end = (record.released if unleased else record.taken) or record.asked
    asked = record.asked + record.queued
    x1 = scale.x(asked)
    width = max(scale.x(end) - x1, 1.5)
    waiter = record.test or record.holder or "session"
    if unleased:
        tip = f"{waiter} waited {seconds(record.waited)} and got no exporter:\n{record.error}"
    else:
        holders = [
            r.holder or "session"
            for r in leases
            if r is not record and (r.taken or 0) < end and (r.released or float("inf")) > asked
        ]
        span = f"({scale.rel(asked)} to {scale.rel(end)})"
        what = f"{exporter}'s exporter" if record.places else exporter
        if exporter in record.waited_for:
            meanwhile = f"\nmeanwhile {what} was held by: {', '.join(holders)}" if holders else ""
            tip = f"{waiter} waited {seconds(record.waited_on(exporter))} for {what} {span}{meanwhile}"
        else:  # not waiting, as the table counts it: the table says 0 s for it
            tip = f"{waiter} took {seconds(end - asked)} to start or reach {what} {span}: it was free"
    mark = (
        f'<text x="{x1 + width + 2:.1f}" y="{top + WAIT_TOP + 7}" fill="{GONE_COLOUR}" font-size="11">✕</text>'
        if unleased
        else ""
    )
    return (
        f'<g class="waited{" unleased" if unleased else ""}" data-test="{escape(waiter)}" '
        f'data-exporter="{escape(exporter)}" data-seconds="{end - asked:.3f}"><title>{escape(tip)}</title>'
        f'<rect class="wait" x="{x1:.1f}" y="{top + WAIT_TOP}" width="{width:.1f}" height="{WAIT_HEIGHT}"/>{mark}'
        "</g>\n"
    )


def _queue(run: Run, record: LeaseRecord, place: str, scale: Scale, top: int, unleased: bool = False) -> str:
    """The time a claim queued at the labgrid coordinator before it got ``place`` (``unleased``: before it gave
    up, on the row of claims that got none): a stripe of its own."""
    end = record.asked + record.queued
    x1 = scale.x(record.asked)
    width = max(scale.x(end) - x1, 1.5)
    waiter = record.test or record.holder or "session"
    span = f"({scale.rel(record.asked)} to {scale.rel(end)})"
    if unleased:
        behind = f" behind {', '.join(record.queued_behind)}" if record.queued_behind else ""
        tip = f"{waiter} queued {seconds(record.queued)} at the labgrid coordinator {run.lab}{behind} {span}"
        tip += f" and got no place:\n{record.error}"
    else:
        behind = f"\nbehind: {', '.join(record.queued_behind)}" if record.queued_behind else ""
        tip = (
            f"{waiter} queued {seconds(record.queued)} at the labgrid coordinator {run.lab} for {place} {span}{behind}"
        )
    mark = (
        f'<text x="{x1 + width + 2:.1f}" y="{top + WAIT_TOP + 7}" fill="{GONE_COLOUR}" font-size="11">✕</text>'
        if unleased
        else ""
    )
    return (
        f'<g class="queued{" unleased" if unleased else ""}" data-test="{escape(waiter)}" '
        f'data-exporter="{escape(place)}" data-seconds="{record.queued:.3f}" '
        f'data-behind="{escape(" ".join(record.queued_behind))}"><title>{escape(tip)}</title>'
        f'<rect class="queue" x="{x1:.1f}" y="{top + WAIT_TOP}" width="{width:.1f}" height="{WAIT_HEIGHT}"/>{mark}'
        "</g>\n"
    )


def _label(nodeid: str, x: float, y: float, width: float, height: int = BAR_HEIGHT) -> str:
    """The test's id in its bar, cut to the bar (a nested svg clips): the path's folders left out, and its file
    too when that would not fit."""
    if width < 24:
        return ""
    short = nodeid.rsplit("/", 1)[-1]
    if len(short) * CHAR_WIDTH + 8 > width and "::" in short:
        short = short.split("::", 1)[1]
    return (
        f'<svg x="{x:.1f}" y="{y}" width="{width:.1f}" height="{height}">'
        f'<text class="label" x="4" y="{height / 2 + 4:.0f}">{escape(short)}</text></svg>'
    )


def _legend(lab: bool) -> str:
    items = [f'<span><i style="background:{COLOURS[o]}"></i>{o}</span>' for o in OUTCOME_RANK]
    items.append(f'<span><i style="background:{COLOURS["health"]}"></i>health check</span>')
    items.append(f'<span><i style="background:{COLOURS["sick"]}"></i>health check failed: board out</span>')
    if lab:
        items.append(
            f'<span><i style="background:{QUEUE_COLOUR}; height:6px"></i>queued at the labgrid coordinator</span>'
        )
    items.append(f'<span><i style="background:{WAIT_COLOUR}; height:6px"></i>waiting for the exporter</span>')
    items.append('<span><i style="background:#e3e9f3; border:1px solid #6b86b3"></i>module or session lease</span>')
    items.append(f'<span><i style="background:{GONE_COLOUR}; width:3px"></i>exporter gone</span>')
    items.append(f'<span><i style="background:{HOOK_COLOUR}; height:8px"></i>exporter\'s lease hook</span>')
    return f'<div class="legend">{"".join(items)}</div>\n'


def _table(run: Run, usages: list[Usage], first: float) -> str:
    lab = bool(run.lab)  # a row per place, and the time queued for it at the coordinator
    out = [
        f'<table class="usage">\n<tr><th>{"place" if lab else "exporter"}</th><th>tests</th><th>busy</th>'
        f"<th>utilization</th>{'<th>queued</th>' if lab else ''}"
        "<th>waited</th><th>longest wait</th><th>failed</th><th>health</th></tr>\n"
    ]
    for u in usages:
        util = "n/a" if u.utilization is None else f"{u.utilization:.0%}"
        queued = f"<td>{seconds(u.queued)}</td>" if lab else ""
        out.append(
            f'<tr data-exporter="{escape(u.name)}"><td>{escape(u.name)}{f" ({u.gone.what})" if u.gone else ""}</td>'
            f"<td>{u.tests}</td><td>{seconds(u.busy)}</td><td>{util}</td>{queued}<td>{seconds(u.waited)}</td>"
            f"<td>{seconds(u.longest)}</td><td>{u.failures}</td><td>{u.health or '-'}</td></tr>\n"
        )
    out.append("</table>\n")
    for line in run.queue() + run.queued_out():
        out.append(f'<p class="queue">{escape(line)}</p>\n')
    advice = run.advice(usages)
    if advice:
        out.append(f'<p class="advice">{escape(advice)}</p>\n')
    for record in (r for r in run.unleased() if not run.gave_up_queued(r)):  # those: run.queued_out()
        out.append(
            f'<p class="unleased">{escape(record.holder or "session")} waited {seconds(record.waited)} and got no '
            f"exporter: {escape(record.error)}</p>\n"
        )
    for gone in run.gone.values():
        at = f"+{gone.at - first:.2f} s"
        out.append(f'<p class="gone">{escape(gone.exporter)} {gone.what} at {at}: {escape(gone.why)}</p>\n')
    for line in run.sick():
        out.append(f'<p class="sick">{escape(line)}</p>\n')
    for line in run.retried():
        out.append(f'<p class="retried">{escape(line)}</p>\n')
    return "".join(out)
