"""``--junitxml`` with retries and health checks: one ``<testcase>`` per test, its outcome the honest one.

pytest's junitxml closes a test's ``<testcase>`` at each teardown report, so each try of a retried test (and each
run of a board's health check) would leave a ``<testcase>`` of its own, and most CI servers count an empty one as a
pass: a test that failed everywhere would show as passed twice and failed once. pytest-rerunfailures users met the
same (its 16.6.1 release wrote a record per rerun and was reported as inflating scores); what they expect is one
record per test, the final outcome, the earlier tries as data. So:

- the reports of a test's other tries (``RETRIED``) carry the property ``jumpstarter_try = retried``, and their
  ``<testcase>`` elements are taken out of the file when pytest has written it;
- the deciding try's ``<testcase>`` carries the tries as properties: ``jumpstarter_attempt`` (one per try, in
  order: ``BOARDS: OUTCOME``, its error after it), and ``jumpstarter_verdict`` (``code``, ``board``, ``flaky``);
- a health check's runs on a board (before its first test, again after a failure) leave its last ``<testcase>``,
  with ``jumpstarter_health``: ``ok``, or why its board is out of the run; a sick board's check is ``<skipped>``
  with that line (visible, and not a failure of the run, as in pytest's own exit status).

Only the controlling process writes the file (xdist's workers' reports reach it), and this runs there.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from _pytest.junitxml import xml_key

from jumpstarter.common.safefiles import write_atomic

TRY_PROPERTY = "jumpstarter_try"  # on a report of a try that didn't decide the outcome: its testcase is dropped
ATTEMPT_PROPERTY = "jumpstarter_attempt"
VERDICT_PROPERTY = "jumpstarter_verdict"
HEALTH_PROPERTY = "jumpstarter_health"


def mark_retried(report: pytest.TestReport) -> None:
    report.user_properties.append((TRY_PROPERTY, "retried"))


def describe_check(report: pytest.TestReport, out: str | None) -> None:
    """A health check's result on its last report: ``ok``, or the line saying its board is out."""
    report.user_properties.append((HEALTH_PROPERTY, out or "ok"))


def describe(report: pytest.TestReport, run: dict[str, Any]) -> None:
    """The tries on the report junitxml writes the test's properties from (its last)."""
    errors: dict[str, str] = {}
    for boards, error in run["errors"]:
        errors.setdefault(boards, error)
    for boards, outcome in run["attempts"]:
        error = f" ({errors[boards]})" if outcome in ("failed", "error") and boards in errors else ""
        report.user_properties.append((ATTEMPT_PROPERTY, f"{boards or '(no board)'}: {outcome}{error}"))
    if run["verdict"]:
        report.user_properties.append((VERDICT_PROPERTY, run["verdict"]))


class OneTestcase:
    """After junitxml wrote the file: the other tries' ``<testcase>`` elements out, a health check's last kept."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.marked = False  # a report of a retried try or a health check went by: the file needs tidying

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.marked:
            self.marked = any(key in (TRY_PROPERTY, HEALTH_PROPERTY) for key, _ in report.user_properties)

    @pytest.hookimpl(trylast=True)  # after junitxml's own pytest_sessionfinish wrote the file
    def pytest_sessionfinish(self) -> None:
        xml = self.config.stash.get(xml_key, None)  # set where junitxml writes: not in xdist's workers
        if xml is None or not self.marked:  # nothing retried or checked: junitxml's file is right as it is
            return
        path = xml.logfile
        try:
            tree = ET.parse(path)
        except (OSError, ET.ParseError):
            return  # junitxml didn't write it (it reports why): nothing to tidy
        changed = False
        for suite in tree.getroot().iter("testsuite"):
            cases = suite.findall("testcase")
            last_check = {_key(c): c for c in cases if _property(c, HEALTH_PROPERTY) is not None}
            for case in cases:
                health = _property(case, HEALTH_PROPERTY)
                if _property(case, TRY_PROPERTY) is not None:  # counted nowhere: its reports were "retried"
                    suite.remove(case)
                elif health is not None and last_check[_key(case)] is not case:
                    suite.remove(case)  # an earlier check of the board: passed (or skipped), counted as such
                    _count(suite, "tests", -1)
                    if case.find("skipped") is not None:
                        _count(suite, "skipped", -1)
                elif health not in (None, "ok"):  # the board's check failed ("sick"): counted nowhere yet
                    ET.SubElement(case, "skipped", type="jumpstarter.sick", message=health)
                    _count(suite, "tests", +1)
                    _count(suite, "skipped", +1)
                else:
                    continue
                changed = True
        if changed:
            text = '<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(tree.getroot(), encoding="unicode")
            write_atomic(Path(path), text.encode("utf-8"))  # as junitxml writes it; never half a file


def _count(suite: ET.Element, name: str, change: int) -> None:
    suite.set(name, str(int(suite.get(name, "0")) + change))


def _key(case: ET.Element) -> tuple[str | None, str | None]:
    return case.get("classname"), case.get("name")


def _property(case: ET.Element, name: str) -> str | None:
    for prop in case.iterfind("properties/property"):
        if prop.get("name") == name:
            return prop.get("value")
    return None
