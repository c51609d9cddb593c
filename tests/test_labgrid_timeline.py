"""Seeing a labgrid lab: the end-of-run table and the timeline name the places and the time tests queued at the
coordinator, apart from waiting for our exporter's lease; runs without --lab look as before."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from labgrid_lab import boards, coordinator, directory, publish  # noqa: F401 (fixtures)
from test_timeline import SVG, attr, child, page, rows, tooltip, waits

from pytest_jumpstarter import timeline_html
from pytest_jumpstarter.records import LeaseRecord, RanTest, Run

HOLDER = """
def test_holds(board):
    open({signal!r}, "w").close()
    board.wait(2.0)
"""
WAITER = """
import os
import time

import pytest

@pytest.fixture
def later():
    deadline = time.monotonic() + 30
    while not os.path.exists({signal!r}) and time.monotonic() < deadline:
        time.sleep(0.01)

def test_queues(later, board):
    board.echo(1)
"""


def queues(row: ET.Element) -> dict[str, ET.Element]:
    """Test id -> its queue stripe in a place's row."""
    return {attr(g, "data-test"): g for g in row.iter(f"{SVG}g") if "queued" in g.get("class", "").split()}


@pytest.mark.e2e
def test_the_table_and_timeline_show_places_and_the_time_queued_at_the_coordinator(pytester, boards, coordinator):  # noqa: F811
    boards(1)  # one place, b0: the second test queues at the coordinator while the first holds it
    signal = str(pytester.path / "taken")
    pytester.makepyfile(test_a=HOLDER.format(signal=signal), test_b=WAITER.format(signal=signal))
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadfile", "--lab", coordinator.url, "--jumpstarter-timeline", "lab.html",
        "--junitxml", "out.xml",
    )  # fmt: skip
    result.assert_outcomes(passed=2)

    # The terminal: a row per place, the time its tests queued for it apart from waiting for its exporter.
    output = result.stdout.str()
    start = output.index(f"- jumpstarter: places of {coordinator.url} -")
    table = output[start:].splitlines()[1:3]
    assert table[0].split() == ["place", "tests", "busy", "util", "queued", "waited", "longest", "wait", "failed"]
    b0 = table[1].split()
    assert (b0[0], b0[1], b0[-1]) == ("b0", "2", "0")
    assert float(b0[5]) >= 0.5, table  # queued: the waiter, behind the holder's 2 s
    assert float(b0[7]) < 0.5, table  # waited for the exporter's lease: the place's exporter was free
    result.stdout.fnmatch_lines(
        [
            f"tests queued * s in total at the labgrid coordinator {coordinator.address}, the longest * s "
            "(test_b.py::test_queues)",
            "test phase * s; busiest: b0 (busy *% of the test phase; tests queued * s for it): "
            "another place like b0 (kind=demo) would help most",
        ]
    )

    # The chart: the queue is a stripe of its own, and the exporter's wait (none here) is not.
    found = rows(page(pytester.path / "lab.html"))
    assert list(found) == ["b0"]
    queued = queues(found["b0"])
    seconds = {test: float(attr(g, "data-seconds")) for test, g in queued.items()}
    assert seconds["test_b.py::test_queues"] >= 0.5, seconds
    assert seconds.get("test_a.py::test_holds", 0) < 0.5, seconds  # a few ms to reserve, if drawn at all
    tip = tooltip(queued["test_b.py::test_queues"])
    assert tip.startswith("test_b.py::test_queues queued ") and float(tip.split()[2]) >= 0.5, tip
    assert f" at the labgrid coordinator {coordinator.address} for b0 (" in tip
    assert all(seconds < 0.5 for seconds in waits(found["b0"]).values()), waits(found["b0"])
    text = (pytester.path / "lab.html").read_text()
    assert "queued at the labgrid coordinator" in text  # the legend says what the stripe is
    table_html = next(t for t in page(pytester.path / "lab.html").iter("table") if t.get("class") == "usage")
    assert [th.text for th in next(iter(table_html))][:6] == [
        "place",
        "tests",
        "busy",
        "utilization",
        "queued",
        "waited",
    ]

    # junitxml: the seconds queued, beside the seconds waited.
    cases = ET.parse(pytester.path / "out.xml").getroot().iter("testcase")
    props = {attr(c, "name"): dict((attr(p, "name"), attr(p, "value")) for p in c.iter("property")) for c in cases}
    assert float(props["test_queues"]["jumpstarter_queued"]) >= 0.5
    assert float(props["test_holds"]["jumpstarter_queued"]) < 0.5


@pytest.mark.e2e
@pytest.mark.parametrize("retry", [[], ["--jumpstarter-retry-elsewhere", "1"]], ids=["claim", "preclaim"])
def test_a_claim_that_times_out_in_the_queue_shows_as_queued_behind_the_places_held(
    pytester,
    boards,  # noqa: F811
    coordinator,  # noqa: F811
    retry,
):
    """The lab is full (an admin holds its one place): the claim's whole wait is queue time, counted on the place
    it queued behind, not a plain wait on a row of its own (also when retrying elsewhere claims before set-up)."""
    boards(1)
    pytester.makepyfile(test_full="def test_full(board):\n    board.echo(1)\n")
    with directory(coordinator) as session:
        session.acquire("b0")
        result = pytester.runpytest_subprocess(
            "--lab", coordinator.url, "--lease-timeout", "2", "--jumpstarter-timeline", "lab.html",
            "--junitxml", "out.xml", *retry,
        )  # fmt: skip
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    start = output.index(f"- jumpstarter: places of {coordinator.url} -")
    header, b0 = (line.split() for line in output[start:].splitlines()[1:3])
    assert header[4:6] == ["queued", "waited"] and b0[0] == "b0", output[start:]
    assert float(b0[5]) >= 1.5 and float(b0[7]) == 0.0, b0  # queued the 2 s behind b0; no exporter's wait
    result.stdout.fnmatch_lines(
        [
            f"tests queued * s in total at the labgrid coordinator {coordinator.address}, the longest * s "
            "(test_full.py::test_full)",
            "*tests queued * s for it): another place like b0 (kind=demo) would help most",
            f"test_full.py::test_full queued * s at the labgrid coordinator {coordinator.address} behind b0 "
            "and got no place",
        ]
    )
    assert "got no exporter" not in output  # the queue's line says it
    found = rows(page(pytester.path / "lab.html"))
    assert list(found) == ["b0", "(no place)"]
    (stripe,) = queues(found["(no place)"]).values()
    assert float(attr(stripe, "data-seconds")) >= 1.5 and attr(stripe, "data-behind") == "b0"
    assert f"at the labgrid coordinator {coordinator.address} behind b0 (" in tooltip(stripe)
    assert "got no place:\nwaited 2 s for " in tooltip(stripe)
    assert not waits(found["(no place)"]), "the queue is not drawn as a plain wait too"
    (case,) = ET.parse(pytester.path / "out.xml").getroot().iter("testcase")
    props = dict((attr(p, "name"), attr(p, "value")) for p in case.iter("property"))
    assert float(props["jumpstarter_queued"]) >= 1.5, props


def test_a_lab_claims_stripes_queue_then_exporter_wait_then_hook_apart():
    """A claim that queued 3 s at the coordinator, then waited 1 s for its exporter (leased outside the lab's
    queue), part of it a hook: three stripes, each its own."""
    t0 = 1_700_000_000.0
    tests = {n: RanTest(n, start=t0 + s, stop=t0 + e, exporters=["b0"]) for n, s, e in [("a", 0, 3), ("b", 0, 6)]}
    hook = {"exporter": "b0", "hook": "beforeLease", "started": t0 + 3.5, "ended": t0 + 4.0, "failure": ""}
    leases = [
        LeaseRecord("a", ("b0",), t0, t0 + 0.02, t0 + 3, queued=0.01, places=("b0",)),
        LeaseRecord("b", ("b0",), t0, t0 + 4.0, t0 + 6, waited_for=("b0",), hooks=[hook], queued=3.0, places=("b0",)),
    ]
    run = Run(["b0"], tests, leases, {}, {}, lab="lab:20408")
    (usage,) = run.usage()
    assert (usage.queued, usage.waited, usage.longest) == (pytest.approx(3.01), 1.0, 1.0)
    root = ET.fromstring(timeline_html.render(run))
    row = rows(root)["b0"]
    stripe = queues(row)["b"]
    rect = child(stripe, f"{SVG}rect")
    wait = next(g for g in row.iter(f"{SVG}g") if g.get("data-test") == "b" and "waited" in g.get("class", ""))
    wait_rect = child(wait, f"{SVG}rect")
    # The queue ends where the exporter's wait begins; the wait ends at the bar.
    assert abs(float(attr(rect, "x")) + float(attr(rect, "width")) - float(attr(wait_rect, "x"))) < 1
    assert float(attr(wait, "data-seconds")) == 1.0
    assert tooltip(wait).startswith("b waited 1.00 s for b0's exporter (")
    assert tooltip(stripe).startswith("b queued 3.00 s at the labgrid coordinator lab:20408 for b0 (")
    assert [g.get("data-hook") for g in row.iter(f"{SVG}g") if "hook" in g.get("class", "").split()] == ["beforeLease"]
    bar = next(g for g in row.iter(f"{SVG}g") if g.get("data-test") == "b" and "lease" in g.get("class", ""))
    assert "queued 3.00 s at the labgrid coordinator, waited 1.00 s, held 2.00 s" in tooltip(bar)


@pytest.mark.parametrize("lab", ["", "lab:20408"])
def test_only_lab_runs_have_the_queue_column(lab):
    t0 = 1_700_000_000.0
    tests = {"a": RanTest("a", start=t0, stop=t0 + 1, exporters=["b0"])}
    run = Run(["b0"], tests, [LeaseRecord("a", ("b0",), t0, t0 + 0.02, t0 + 1)], {}, {}, lab=lab)
    header = run.summary()[0].split()
    html = timeline_html.render(run)
    if lab:
        assert header[:5] == ["place", "tests", "busy", "util", "queued"]
        assert "queued at the labgrid coordinator" in html
    else:
        assert header == ["exporter", "tests", "busy", "util", "waited", "longest", "wait", "failed"]
        assert "queued" not in html and "place" not in html


@pytest.mark.e2e
def test_the_growth_bench_runs_lab_and_exporter_side_by_side():
    """bench/bench_lab_growth.py, small: its lab hosts publish every place, both runs pass, the ratio is printed."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_lab_growth.py"
    args = ["--places", "4", "--hosts", "2", "--workers", "2", "--tests", "40", "--rounds", "1"]
    done = subprocess.run([sys.executable, str(bench), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("4 places from 2 lab hosts serving in "), lines
    rates = {line.split()[0].rstrip(","): float(re.findall(r"([0-9.]+) tests/s", line)[0]) for line in lines[2:4]}
    assert set(rates) == {"--exporter", "--lab"} and all(rate > 0 for rate in rates.values()), lines
    assert any(line.startswith("  ratio lab / --exporter: ") for line in lines), lines
