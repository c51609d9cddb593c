"""Seeing the lab: the summary table, the junitxml figures and the HTML timeline of who held which exporter."""

from __future__ import annotations

import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from samples import CRASHY_DRIVER, exporter_yaml

from pytest_jumpstarter import timeline_html
from pytest_jumpstarter.records import LeaseRecord, RanTest, Run
from pytest_jumpstarter.timeline import command_line

BOARD = "jumpstarter_driver_demo.Board"
SVG = "{http://www.w3.org/2000/svg}"

# Two boards: b0 serves `board`; b1 serves `board` and `peer`. test_a.py and test_b.py go to one worker each
# (--dist loadfile); test_waits_for_b0 asks for b0 only once test_holds_b0 holds it, so it waits for it.
HOLDER = """
    import pytest

    @pytest.mark.exporter(unit="b0")
    def test_holds_b0(board):
        open({signal!r}, "w").close()
        board.wait(0.8)
"""
OTHERS = """
    import os
    import time

    import pytest

    @pytest.fixture
    def later():
        deadline = time.monotonic() + 30
        while not os.path.exists({signal!r}) and time.monotonic() < deadline:
            time.sleep(0.01)

    @pytest.mark.exporter(unit="b0")
    def test_waits_for_b0(later, board):
        board.echo(1)

    @pytest.mark.exporter(unit="b1")
    def test_fails_on_b1(board):
        board.wait(0.3)
        assert board.add(1, 1) == 3

    @pytest.mark.exporter("board", unit="b0")
    def test_link(board, peer):
        board.wait(peer.wait(0.2))

    @pytest.mark.skip(reason="not today")
    def test_skipped(board):
        pass
"""


def two_boards(folder: Path) -> list[str]:
    """--exporter arguments for b0 (board) and b1 (board and peer), YAML exporters the plugin starts."""
    b0 = exporter_yaml(folder / "b0.yaml", {"board": BOARD}, name="b0", labels={"unit": "b0"}, config="name: b0")
    b1 = exporter_yaml(
        folder / "b1.yaml", {"board": BOARD, "peer": BOARD}, name="b1", labels={"unit": "b1"}, config="name: b1"
    )
    return ["--exporter", str(b0), "--exporter", str(b1)]


def parallel_run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    signal = str(pytester.path / "taken")
    pytester.makepyfile(test_a=HOLDER.format(signal=signal), test_b=OTHERS.format(signal=signal))
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadfile", *two_boards(pytester.path), "--jumpstarter-timeline", "lab.html", *args
    )
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    return result


def page(path: Path) -> ET.Element:
    """The timeline, parsed: it is well-formed XML as well as HTML."""
    return ET.parse(path).getroot()


def attr(element: ET.Element, name: str) -> str:
    """An attribute the page must have."""
    value = element.get(name)
    assert value is not None, f"<{element.tag}> has no {name}"
    return value


def child(element: ET.Element, tag: str) -> ET.Element:
    """A child element the page must have."""
    found = element.find(tag)
    assert found is not None, f"<{element.tag}> has no <{tag}>"
    return found


def rows(root: ET.Element) -> dict[str, ET.Element]:
    return {attr(g, "data-exporter"): g for g in root.iter(f"{SVG}g") if "row" in g.get("class", "").split()}


def bars(row: ET.Element) -> dict[str, str]:
    """Test id -> outcome of the bars in an exporter's row."""
    return {
        attr(g, "data-test"): attr(g, "data-outcome")
        for g in row.iter(f"{SVG}g")
        if g.get("class", "").startswith(("lease", "test"))
    }


def waits(row: ET.Element) -> dict[str, float]:
    return {
        attr(g, "data-test"): float(attr(g, "data-seconds"))
        for g in row.iter(f"{SVG}g")
        if "waited" in g.get("class", "").split()
    }


def lease_of(row: ET.Element, test: str) -> ET.Element:
    """The bar of ``test`` in an exporter's row."""
    return next(g for g in row.iter(f"{SVG}g") if g.get("data-test") == test and "lease" in g.get("class", ""))


def tooltip(element: ET.Element) -> str:
    return child(element, f"{SVG}title").text or ""


def test_parallel_run_timeline_summary_and_junitxml(pytester):
    result = parallel_run(pytester, "--junitxml", "out.xml")
    root = page(pytester.path / "lab.html")
    found = rows(root)
    assert list(found) == ["b0", "b1"]
    assert bars(found["b0"]) == {
        "test_a.py::test_holds_b0": "passed",
        "test_b.py::test_waits_for_b0": "passed",
        "test_b.py::test_link": "passed",
    }
    assert bars(found["b1"]) == {"test_b.py::test_fails_on_b1": "failed", "test_b.py::test_link": "passed"}
    # Bars are coloured by outcome, labelled with the id, the full id and durations on hover.
    failed = lease_of(found["b1"], "test_b.py::test_fails_on_b1")
    assert child(failed, f"{SVG}rect").get("fill") == timeline_html.COLOURS["failed"]
    assert tooltip(failed).startswith("test_b.py::test_fails_on_b1\nfailed on b1 (gw")
    assert "waited " in tooltip(failed) and "held " in tooltip(failed)
    labels = [t.text for t in failed.iter(f"{SVG}text")]
    assert labels in (["test_b.py::test_fails_on_b1"], ["test_fails_on_b1"])  # the file left out if narrow
    link = lease_of(found["b0"], "test_b.py::test_link")
    assert "also on b1" in tooltip(link)
    # The wait is drawn on b0, before the waiter's bar, and says who held b0 meanwhile.
    waited = waits(found["b0"])
    assert waited["test_b.py::test_waits_for_b0"] >= 0.5, waited
    assert all(seconds < 0.5 for test, seconds in waited.items() if test != "test_b.py::test_waits_for_b0")
    wait = next(
        g
        for g in found["b0"].iter(f"{SVG}g")
        if g.get("data-test") == "test_b.py::test_waits_for_b0" and "waited" in g.get("class", "")
    )
    assert "meanwhile b0 was held by: test_a.py::test_holds_b0" in tooltip(wait)
    wait_end = float(attr(child(wait, f"{SVG}rect"), "x")) + float(attr(child(wait, f"{SVG}rect"), "width"))
    bar = lease_of(found["b0"], "test_b.py::test_waits_for_b0")
    assert abs(float(attr(child(bar, f"{SVG}rect"), "x")) - wait_end) < 2
    assert not waits(found["b1"]) or max(waits(found["b1"]).values()) < 0.5
    assert not [g for g in root.iter(f"{SVG}g") if g.get("class") == "gone"]
    # Self-contained: no script, nothing fetched.
    text = (pytester.path / "lab.html").read_text()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text and "url(#" in text  # the only urls are the page's own patterns

    # The terminal's table: per exporter tests, busy, utilization, waits, failures; then the busiest board.
    output = result.stdout.str()
    table = output[output.index("- jumpstarter: exporters -") :].splitlines()[1:4]
    assert table[0].split() == ["exporter", "tests", "busy", "util", "waited", "longest", "wait", "failed"]
    b0, b1 = (line.split() for line in table[1:])
    assert (b0[0], b0[1], b0[-1]) == ("b0", "3", "0") and (b1[0], b1[1], b1[-1]) == ("b1", "2", "1")
    assert float(b0[2]) >= 0.8 and b0[4].endswith("%") and float(b0[5]) >= 0.5 and float(b1[5]) < 0.5
    result.stdout.fnmatch_lines(
        [
            "test phase * s; busiest: b0 (busy *% of the test phase; tests waited * s for it): "
            "another board like b0 (unit=b0) would help most",
            f"jumpstarter: timeline written to {pytester.path / 'lab.html'}",
        ]
    )

    # junitxml: per test, the exporters it used and the seconds it waited for them.
    cases = ET.parse(pytester.path / "out.xml").getroot().iter("testcase")
    properties = {
        attr(case, "name"): [(attr(p, "name"), attr(p, "value")) for p in case.iter("property")] for case in cases
    }
    assert {name: [k for k, _ in props] for name, props in properties.items()} == {
        "test_holds_b0": ["jumpstarter_exporter", "jumpstarter_waited"],
        "test_waits_for_b0": ["jumpstarter_exporter", "jumpstarter_waited"],
        "test_fails_on_b1": ["jumpstarter_exporter", "jumpstarter_waited"],
        "test_link": ["jumpstarter_exporter", "jumpstarter_exporter", "jumpstarter_waited"],
        "test_skipped": [],
    }
    assert properties["test_link"][:2] == [("jumpstarter_exporter", "b0"), ("jumpstarter_exporter", "b1")]
    assert float(dict(properties["test_waits_for_b0"])["jumpstarter_waited"]) >= 0.5
    assert float(dict(properties["test_holds_b0"])["jumpstarter_waited"]) < 0.5


def test_a_dead_exporter_is_marked_and_claims_that_got_nothing_have_their_row(pytester):
    pytester.makepyfile(
        crashy_driver=CRASHY_DRIVER,
        test_it="""
            import pytest
            from jumpstarter.errors import JumpstarterError

            @pytest.mark.parametrize("name", ["<b>&'x"])
            def test_1_crash(dut, name):
                assert dut.call("ping") == "pong"
                with pytest.raises(JumpstarterError):
                    dut.call("crash")

            def test_2_after(dut):
                pass
        """,
    )
    config = exporter_yaml(pytester.path / "crashy.yaml", {"dut": "crashy_driver.Crashy"}, name="crashy")
    result = pytester.runpytest_subprocess("--exporter", str(config), "--jumpstarter-timeline", "out/lab.html")
    result.assert_outcomes(passed=1, errors=1)
    html = (pytester.path / "out" / "lab.html").read_text()
    assert "<b>&'x" not in html and "&lt;b&gt;&amp;&#x27;x" in html  # test ids are escaped
    root = page(pytester.path / "out" / "lab.html")
    found = rows(root)
    assert list(found) == ["crashy", "(no exporter)"]
    assert bars(found["crashy"]) == {"test_it.py::test_1_crash[<b>&'x]": "passed"}
    gone = next(g for g in found["crashy"].iter(f"{SVG}g") if g.get("class") == "gone")
    assert "died (exit code 3)" in tooltip(gone)
    bar = child(next(g for g in found["crashy"].iter(f"{SVG}g") if "lease" in g.get("class", "")), f"{SVG}rect")
    assert float(attr(child(gone, f"{SVG}line"), "x1")) >= float(attr(bar, "x"))  # it died during test_1
    unleased = next(g for g in found["(no exporter)"].iter(f"{SVG}g") if "unleased" in g.get("class", ""))
    assert unleased.get("data-test") == "test_it.py::test_2_after"
    assert "got no exporter" in tooltip(unleased) and "died" in tooltip(unleased)
    result.stdout.fnmatch_lines(
        [
            "crashy (gone) *1 *",
            "1 claim(s) got no exporter after waiting * s in total: test_it.py::test_2_after",
            "crashy gone at +* s: exporter * died (exit code 3); its last output:",
        ]
    )


def test_an_exporter_whose_client_class_is_refused_is_not_called_gone(pytester, monkeypatch):
    """It runs the whole time; only this side won't load the client class it names: say that, not "gone"."""
    pytester.makepyfile(
        refused_driver="""
            from dataclasses import dataclass
            from jumpstarter.driver import Driver, export

            @dataclass(kw_only=True)
            class Refused(Driver):
                @classmethod
                def client(cls):
                    return "refused_driver.RefusedClient"

                @export
                def ping(self):
                    return "pong"
        """,
        test_it="def test_1(dut):\n    pass\n",
    )
    monkeypatch.delenv("JUMPSTARTER_CLIENT_MODULES", raising=False)
    config = exporter_yaml(pytester.path / "lab.yaml", {"dut": "refused_driver.Refused"}, name="lab")
    result = pytester.runpytest_subprocess("--exporter", str(config), "--jumpstarter-timeline", "lab.html")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "lab (client class refused) *",
            "lab client class refused at +* s: jumpstarter: *refused_driver.RefusedClient*",
        ]
    )
    assert "(gone)" not in result.stdout.str() and "lab gone at" not in result.stdout.str()
    root = page(pytester.path / "lab.html")
    mark = next(g for g in rows(root)["lab"].iter(f"{SVG}g") if g.get("class") == "gone")
    assert tooltip(mark).startswith("lab client class refused at ")
    assert "(client class refused)" in (pytester.path / "lab.html").read_text()


def test_a_module_lease_is_one_bar_with_its_tests_inside(pytester):
    pytester.makepyfile(
        test_flash="def test_a(board):\n    board.wait(0.2)\n\ndef test_b(board):\n    assert False\n",
    )
    args = two_boards(pytester.path)[:2]
    result = pytester.runpytest_subprocess(*args, "--lease-scope", "module", "--jumpstarter-timeline", "t.html")
    result.assert_outcomes(passed=1, failed=1)
    row = rows(page(pytester.path / "t.html"))["b0"]
    (lease,) = [g for g in row.iter(f"{SVG}g") if g.get("class", "").startswith("lease")]
    assert (lease.get("class"), lease.get("data-test")) == ("lease scoped failed", "test_flash.py")
    inside = {g.get("data-test"): g.get("data-outcome") for g in lease.iter(f"{SVG}g") if g is not lease}
    assert inside == {"test_flash.py::test_a": "passed", "test_flash.py::test_b": "failed"}
    result.stdout.fnmatch_lines(["b0  *  2  *  1", "*no test waited for an exporter*"])


def test_no_table_without_exporters_and_the_file_path_from_the_environment(pytester, monkeypatch):
    pytester.makepyfile("def test_plain():\n    pass\n")
    monkeypatch.setenv("JUMPSTARTER_TIMELINE", "reports/t.html")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    assert "- jumpstarter: exporters -" not in result.stdout.str()
    root = page(pytester.path / "reports" / "t.html")
    assert rows(root) == {} and "no test used an exporter" in ET.tostring(root, encoding="unicode")


def test_the_busiest_board_and_where_another_would_help():
    t0 = 1_700_000_000.0  # wall-clock seconds: time.time() as the processes record it

    def lease(holder: str, exporter: str, asked: float, taken: float, released: float, busy=()) -> LeaseRecord:
        return LeaseRecord(holder, (exporter,), t0 + asked, t0 + taken, t0 + released, waited_for=busy)

    tests = {
        name: RanTest(name, start=t0 + s, stop=t0 + e, exporters=[x])
        for name, s, e, x in [("a", 0, 4, "rpi"), ("b", 0, 9, "rpi"), ("c", 0, 2, "pi5")]
    }
    leases = [lease("a", "rpi", 0, 0, 4), lease("b", "rpi", 0, 4, 9, busy=("rpi",)), lease("c", "pi5", 0, 0, 2)]
    run = Run(["rpi", "pi5", "idle"], tests, leases, {}, {"rpi": {"board": "rpi4"}})
    rpi, pi5, idle = run.usage()
    assert (rpi.tests, rpi.busy, rpi.utilization, rpi.waited, rpi.longest) == (2, 9, 1.0, 4, 4)
    assert (pi5.busy, pi5.waited, idle.tests, idle.busy, idle.utilization) == (2, 0, 0, 0, 0)
    assert run.advice([rpi, pi5, idle]) == (
        "busiest: rpi (busy 100% of the test phase; tests waited 4.0 s for it): another board like rpi (board=rpi4) "
        "would help most"
    )
    leases[1].waited_for = ()  # the time to start the exporter is no wait for a busy board
    assert "no test waited for an exporter" in run.advice(run.usage())


def test_the_tooltips_and_the_table_say_the_same_wait():
    """A claim that took 0.03 s to reach a free exporter did not wait for it: the table says 0.00 s, and so must
    the bar's tooltip and the wait band's; a claim that found it busy waited, in both, rounded alike."""
    t0 = 1_700_000_000.0
    tests = {n: RanTest(n, start=t0 + s, stop=t0 + e, exporters=["rpi"]) for n, s, e in [("a", 0, 2), ("b", 0, 4)]}
    leases = [
        LeaseRecord("a", ("rpi",), t0, t0 + 0.034, t0 + 2),  # reaching a free exporter
        LeaseRecord("b", ("rpi",), t0 + 0.5, t0 + 2.004, t0 + 4, waited_for=("rpi",)),  # it was busy
    ]
    root = ET.fromstring(timeline_html.render(Run(["rpi"], tests, leases, {}, {})))
    table = next(t for t in root.iter("table") if t.get("class") == "usage")
    cells = [td.text for td in next(tr for tr in table if tr.get("data-exporter") == "rpi")]
    assert cells[4] == "1.50 s"  # waited: only b's
    row = rows(root)["rpi"]
    assert tooltip(lease_of(row, "a")).splitlines()[2].startswith("waited 0.00 s, 0.03 s to start or reach it, held")
    assert tooltip(lease_of(row, "b")).splitlines()[2].startswith("waited 1.50 s, held")
    bands = {g.get("data-test"): tooltip(g) for g in row.iter(f"{SVG}g") if "waited" in g.get("class", "")}
    assert bands["a"].startswith("a took 0.03 s to start or reach rpi (") and bands["a"].endswith("it was free")
    assert bands["b"].startswith("b waited 1.50 s for rpi (") and "meanwhile rpi was held by: a" in bands["b"]


def test_the_page_shows_the_command_without_passphrases():
    args = (
        "-n",
        "2",
        "--exporter-passphrase",
        "s3cret",
        "--exporter-passphrase=s3cret",
        "-o",
        "jumpstarter_passphrase=x",
    )
    assert command_line(args) == (
        "pytest -n 2 --exporter-passphrase *** --exporter-passphrase=*** -o jumpstarter_passphrase=***"
    )


# The browser ------------------------------------------------------------------------------------------------------


def browser() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def png_rows(data: bytes) -> tuple[int, list[bytes]]:
    """Decode an 8-bit RGB or RGBA PNG (what Chromium writes): channels per pixel, and each row's bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert (depth, interlace) == (8, 0) and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    decoded, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride) if kind else ():
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        decoded.append(bytes(line))
        previous = line
    return channels, decoded


def test_the_timeline_renders_in_a_real_browser(pytester, tmp_path):
    chromium = browser()
    if chromium is None:
        pytest.skip("no browser: Debian's chromium is not installed (scripts/setup.sh installs it as root with apt)")
    parallel_run(pytester)
    html = pytester.path / "lab.html"
    shot = tmp_path / "lab.png"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    command += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    command += [f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,600"]
    done = subprocess.run([*command, html.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr
    channels, pixels = png_rows(shot.read_bytes())
    left = timeline_html.PAGE_LEFT + timeline_html.LABEL_WIDTH
    right = left + timeline_html.PLOT_WIDTH

    def seen(top: int, height: int, colour: str) -> int:
        """Pixels of ``colour`` in the plot area of a row's band."""
        want = bytes.fromhex(colour.lstrip("#"))
        found = 0
        for y in range(timeline_html.PAGE_TOP + top, timeline_html.PAGE_TOP + top + height):
            row = pixels[y]
            for x in range(left, right):
                if all(abs(row[x * channels + k] - want[k]) <= 12 for k in range(3)):
                    found += 1
        return found

    for name, row in rows(page(html)).items():
        top, height = int(attr(row, "data-top")), int(attr(row, "data-height"))
        for outcome in set(bars(row).values()):
            assert seen(top, height, timeline_html.COLOURS[outcome]) > 100, (name, outcome)
        if name == "b0":
            assert seen(top, height, timeline_html.WAIT_COLOUR) > 50  # the wait for b0, striped
