"""What a test's report says about the hardware: the driver calls it made, lease notes, the exporter's log.

A failing test's report gets a "jumpstarter calls" section (every call, its result and time) and the
output of the exporters it used meanwhile; lease waits are noted as they happen. ``--jumpstarter-log`` (or
the test's marker) shows the calls live. Per-test state lives on the item (``item.stash``).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_jumpstarter.lab import Lab

CALLS = pytest.StashKey[list[str]]()  # the current test's driver calls, one line each
NOTES = pytest.StashKey[list[str]]()  # the current test's lease notes, not yet in a report section
EXPORTER_PROPERTY = "jumpstarter_exporter"  # user_properties key: an exporter the test used (junitxml too)

# How a call cut off by its exporter's death fails (jumpstarter.errors.error_from_rpc's words, gRPC's).
TRANSPORT_FAILURES = ("is unavailable", "was cancelled", "Socket closed", "Connection reset")

NO_EXPORTER_HINT = (
    "no exporter is configured: if the missing fixture is an export, pass "
    "--exporter YAML|ADDRESS (or set jumpstarter_exporters / JUMPSTARTER_EXPORTERS)"
)


class Reporting:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.item: pytest.Item | None = None  # the test running now, whose calls are recorded
        self.live = False  # show calls as they happen (--jumpstarter-log or its marker; not -v: noisy under xdist)
        self._log_positions: dict[str, dict[str, int]] = {}
        self._dead: set[str] = set()  # exporters whose death a test's report has told
        for exporter in lab.exporters:
            exporter.observers.append(self.record)

    def header(self) -> list[str]:
        lab = self.lab
        if lab.replay:
            return [f"jumpstarter: replaying the recordings under {lab.replay}; no exporter is used"]
        if not lab.exporters:
            return []
        lines = [f"jumpstarter: exporters from {lab.values.sources['exporters']}:"]
        for exporter in lab.exporters:
            labels = ", ".join(f"{k}={v}" for k, v in exporter.labels.items())
            lines.append(
                f"  {exporter.describe()}: {', '.join(exporter.exports) or 'no exports'}"
                + (f" [{labels}]" if labels else "")
            )
        return [*lines, f"jumpstarter: {lab.values.others()}"]

    # What happens during a test ---------------------------------------------------------------

    def record(self, target: str, method: str, args: tuple, outcome: Any, seconds: float) -> None:
        """A driver call (a connection observer): kept for the test's report, shown live if asked."""
        shown = ", ".join(_short(a) for a in args)
        result = (
            f"raised {type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else _short(outcome)
        )
        line = f"{target + '.' if target else ''}{method}({shown}) -> {result}  [{seconds * 1e3:.1f} ms]"
        if self.item is not None:
            self.item.stash.setdefault(CALLS, []).append(line)
        if self.live:
            self.write(line)

    def say(self, text: str) -> None:
        """A note about leases: shown live, and kept for the test's report."""
        if self.item is not None:
            self.item.stash.setdefault(NOTES, []).append(text)
        self.write(text)

    def write(self, text: str) -> None:
        config = self.lab.config
        capture = config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else nullcontext():
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None and self.lab.workerid is None:
                reporter.write_line(f"jumpstarter: {text}")
            else:  # an xdist worker: its stderr is the controlling process's terminal
                print(f"[{self.lab.workerid}] jumpstarter: {text}", file=sys.stderr, flush=True)

    # Hooks ---------------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.item = item
        item.stash[CALLS], item.stash[NOTES] = [], []
        self.live = bool(self.lab.values.per_test(item, "log")[0])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        notes = item.stash.get(NOTES, [])
        if notes and call.when != "teardown":
            report.sections.append(("jumpstarter lease", "\n".join(notes)))
            item.stash[NOTES] = []
        if report.failed:
            calls = item.stash.get(CALLS, [])
            if calls and call.when == "call":
                report.sections.append(("jumpstarter calls", "\n".join(calls)))
            if not self.lab.exporters and call.excinfo is not None and getattr(call.excinfo.value, "argname", None):
                report.sections.append(("jumpstarter", NO_EXPORTER_HINT))
        return report

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        """Where each exporter's output stood when a test began (runs in the process that owns the exporters)."""
        if self.lab.exporters and self.lab.workerid is None:
            self._log_positions[nodeid] = {e.name: e.log_position for e in self.lab.exporters}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        since = self._log_positions.get(report.nodeid) if report.failed else None
        if since is None or report.when == "teardown":
            return
        used = {value for key, value in report.user_properties if key == EXPORTER_PROPERTY}
        for exporter in self.lab.exporters:
            if exporter.name in used or (report.when == "setup" and exporter.name in since):
                died = self._died_now(exporter, report)
                if died:
                    report.sections.append(("jumpstarter", died))
                text = exporter.output(since.get(exporter.name, 0))
                if text:
                    report.sections.append((f"exporter {exporter.name} log", text))

    def _died_now(self, exporter: Any, report: pytest.TestReport) -> str | None:
        """Whether ``exporter`` died during this failed test: told to the test that caused it (the next ones
        hear that it is gone). A call cut off by the death fails a moment before the exit is seen: wait for it."""
        if exporter.name in self._dead:
            return None
        from pytest_jumpstarter.exporters import DYING

        cut_off = any(sign in report.longreprtext for sign in TRANSPORT_FAILURES)
        code = exporter.exit_code(wait=DYING if cut_off else 0)
        if code is None:
            return None
        self._dead.add(exporter.name)
        return f"exporter {exporter.name} ({exporter.spec}) died during this test, exit code {code}: its log follows"

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self._log_positions.pop(nodeid, None)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
