"""The exporters' hooks a claim waited for (beforeLease / afterLease, see jumpstarter.exporter.holders): a note in
the test's report with their output, and a record for the timeline's stripe."""

from __future__ import annotations

from typing import Any

REPORT_OUTPUT = 16 * 1024  # characters of a hook's output in the test's report: its last ones


def note(exporter: str, run: Any) -> str:
    """For the report of the test that waited for ``run`` (a HookRun) on ``exporter``."""
    how = f"failed: {run.failure} (onFailure: {run.on_failure})" if run.failure else "succeeded"
    output = run.output.rstrip()
    if len(output) > REPORT_OUTPUT:
        output = f"[{len(output) - REPORT_OUTPUT} characters left out]\n{output[-REPORT_OUTPUT:]}"
    shown = f"; its output:\n{output}" if output else ", printing nothing"
    return f"{exporter}: its {run.hook} hook (for {run.holder}) {how} after {run.ended - run.started:.1f} s{shown}"


def record(exporter: str, run: Any) -> dict[str, Any]:
    """What the timeline draws of ``run``: plain data, which rides from xdist workers."""
    return {
        "exporter": exporter,
        "hook": run.hook,
        "started": run.started,
        "ended": run.ended,
        "failure": run.failure,
    }
