# ruff: noqa: F811
"""A labgrid lab: a real labgrid-coordinator on loopback, exporters of ours publishing to it, pytest --lab."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from samples import exporter_yaml

pytest.importorskip("labgrid", reason="labgrid is in the dev extra: run scripts/setup.sh")

# The lab's fixtures (boards, coordinator) come from labgrid_lab: test arguments of those names are theirs.
from labgrid_lab import BOARD, boards, coordinator, directory, holding_tests, publish, until  # noqa: E402, F401

from jumpstarter.labgrid.publish import Publisher  # noqa: E402

pytestmark = pytest.mark.e2e


def test_an_exporter_publishes_its_place_and_leaves_when_it_stops(boards, coordinator):
    (process,) = boards(1, labels={"kind": "demo", "jumpstarter.dev/x": "y"}, passphrase="s3cret")
    with directory(coordinator) as session:
        place = session.places["b0"]
        assert place.tags == {"kind": "demo"}  # the labels that can be tags
        (resource,) = session.resources_of(place, "JumpstarterExporter")
        assert resource.params["address"] == process.address and resource.params["tls"] is False
        assert resource.params["exports"] == "board"
        assert "s3cret" not in repr(resource.params)  # never the passphrase
        process.stop()
        until(lambda: not session.resources, "the resource gone")
        assert "b0" in session.places  # the place (the admin's record) stays


def test_workers_each_get_a_board_and_a_third_is_told_who_holds_them(pytester, boards, coordinator):
    boards(2)
    pytester.makepyfile(test_lab=holding_tests(6, 1.0))
    result = pytester.runpytest_subprocess("-n", "3", "--lab", coordinator.url, "-rA", "-s")
    result.assert_outcomes(passed=6)
    result.stderr.fnmatch_lines(
        ["[[]gw?] jumpstarter: queued at the labgrid coordinator * for export 'board': *held by*"]
    )
    assert "its exporter is leased" not in result.stderr.str()  # each place's lease went back with it


def test_two_workers_two_boards_never_share(pytester, boards, coordinator):
    boards(2)
    pytester.makepyfile(
        test_lab="import os, time\n"
        "def record(board):\n"
        "    with open('used.txt', 'a') as f:\n"
        "        f.write(f\"{os.environ['PYTEST_XDIST_WORKER']} {board.call('describe')['name']} {time.time()}\\n\")\n"
        + "".join(
            f"def test_{i}(board):\n    record(board)\n    board.wait(0.3)\n    record(board)\n\n" for i in range(6)
        )
    )
    result = pytester.runpytest_subprocess("-n", "2", "--lab", coordinator.url)
    result.assert_outcomes(passed=6)
    lines = [line.split() for line in (pytester.path / "used.txt").read_text().splitlines()]
    # each test wrote two lines; a board is never between the two lines of two workers at once
    by_board: dict[str, list[tuple[float, str]]] = {}
    for worker, name, stamp in lines:
        by_board.setdefault(name, []).append((float(stamp), worker))
    for events in by_board.values():
        events.sort()
        workers = [w for _, w in events]
        assert all(workers[i] == workers[i + 1] for i in range(0, len(workers), 2)), workers
    assert len(by_board) == 2  # both boards were used


def test_an_unreachable_coordinator_is_a_usage_error_naming_it(pytester):
    pytester.makepyfile(test_lab="def test_it(exporter):\n    pass\n")
    result = pytester.runpytest_subprocess("--lab", "labgrid://127.0.0.1:9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lab labgrid://127.0.0.1:9*coordinator at 127.0.0.1:9 can't be reached*"])


def test_a_place_whose_exporter_is_down_is_skipped_for_another(pytester, boards, coordinator):
    (down,) = boards(1)
    down.stop()  # b0's place stays, without its exporter
    boards(1, first=1)
    pytester.makepyfile(test_lab=holding_tests(3, 0.1))
    with directory(coordinator) as session:
        until(lambda: not session.resources_of(session.places["b0"], "JumpstarterExporter"), "b0 unpublished")
        # b1 busy at first, so the coordinator allocates b0 to the run's first claim
        session.acquire("b1")
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--lab", coordinator.url, "-rA", "-s"],
            cwd=pytester.path,
            stdout=subprocess.PIPE,
            text=True,
        )
        until(lambda: session.places["b0"].reservation, "the run's first claim allocated b0")
        session.release("b1")
        output = run.communicate(timeout=120)[0]
    assert run.returncode == 0, output
    assert "skipping place b0: place 'b0' has no JumpstarterExporter resource" in output


def test_hostile_place_data_is_a_clear_error(pytester, boards, coordinator):
    boards(1)  # kind=demo
    publisher = Publisher(coordinator.address, "odd", "not an address", False, ["board"], {"kind": "odd"}).start()
    try:
        assert publisher.published.wait(30)
        pytester.makepyfile(
            test_lab="import pytest\n@pytest.mark.exporter(kind='odd')\ndef test_it(board):\n    pass\n"
        )
        result = pytester.runpytest_subprocess("--lab", coordinator.url, "--lease-timeout", "60")
    finally:
        publisher.stop()
    result.assert_outcomes(errors=1)  # fails fast: no waiting out the lease timeout
    result.stdout.fnmatch_lines(
        [
            "*no place left for export 'board' with kind=odd: place 'odd': its JumpstarterExporter resource has "
            "address 'not an address', which is not HOST:PORT*"
        ]
    )


def test_a_place_whose_holder_died_comes_back(pytester, boards, coordinator, tmp_path):
    boards(1)
    holder = tmp_path / "holder.py"
    holder.write_text(
        "import sys, time\n"
        "from pytest_jumpstarter.labgrid import LabgridPool\n"
        f"pool = LabgridPool({coordinator.address!r}, None, False, {{}}, 0)\n"
        "claim = pool.claim({'board': {}}, 'doomed holder', 30)\n"
        "print('HOLDING', flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, str(holder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "HOLDING"
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    pytester.makepyfile(test_lab=holding_tests(1, 0.1))
    result = pytester.runpytest_subprocess("--lab", coordinator.url, "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*place b0 was held by *(jumpstarter), which has held no lease*released it*"])


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_coordinator_restart_keeps_running_tests_and_new_claims_retry(pytester, boards, coordinator):
    boards(2)
    pytester.makepyfile(test_lab=holding_tests(4, 1.5))
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--lab", coordinator.url, "-rA"]
    run = subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, text=True)
    with directory(coordinator) as session:
        until(lambda: sum(bool(p.acquired) for p in session.places.values()) == 2, "both places acquired")
    # The coordinator writes places.yaml a little after a change: killed before, it comes back without them
    # (and the exporters publish them again, which the claims wait for).
    until(lambda: all(f"{n}:" in _text(coordinator.folder / "places.yaml") for n in ("b0", "b1")), "places saved")
    coordinator.stop()
    time.sleep(1)
    coordinator.start()  # on the same port, with the same places.yaml
    output = run.communicate(timeout=120)[0]
    print(output)
    assert run.returncode == 0, output
    assert "4 passed" in output


def test_labgrids_own_plugin_stays_out_of_runs_that_dont_name_it(pytester):
    pytester.makepyfile(
        test_plain="""
            def test_log_format(request):
                assert request.config.getini("log_format") == (
                    "%(levelname)-8s %(name)s:%(filename)s:%(lineno)d %(message)s"
                )

            def test_target(target):
                pass
        """
    )
    result = pytester.runpytest_subprocess("-vv", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'target' not found*"])
    assert "current_level" not in result.stdout.str()  # labgrid's print at -vv
    named = pytester.runpytest_subprocess("-p", "labgrid", "-p", "no:cacheprovider", "-k", "target")
    named.assert_outcomes(skipped=1, deselected=1)  # labgrid's own fixture: "missing environment config"


def test_jumpstarter_lab_lists_places_holders_and_exporter_state(boards, coordinator, tmp_path):
    (first, second) = boards(2)
    second.stop()
    with directory(coordinator) as session:
        until(lambda: len(session.resources) == 1, "b1 unpublished")
        session.acquire("b0")
        listing = subprocess.run(
            [sys.executable, "-m", "jumpstarter", "lab", coordinator.url], capture_output=True, text=True, timeout=60
        )
    assert listing.returncode == 0, listing.stderr
    out = listing.stdout.splitlines()
    assert out[0] == f"b0  [kind=demo]  held by {session.name}"
    assert out[1] == f"    exporter: {first.address}: free"  # held at the coordinator, its lock free
    assert out[2:] == [
        "b1  [kind=demo]  free",
        "    exporter: no exporter of ours published",
        f"2 places at the labgrid coordinator {coordinator.address}",
    ]
    bad = subprocess.run(
        [sys.executable, "-m", "jumpstarter", "lab", "labgrid://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "labgrid coordinator at 127.0.0.1:9 can't be reached" in bad.stderr


def test_the_lab_pages_commands_run_as_written(coordinator, tmp_path, exporter_process):
    """docs/lab.md's lines, run with the test's own addresses in place of the page's."""
    page = (Path(__file__).parent.parent / "docs" / "lab.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", page, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]
    here = {"lab-coordinator:20408": coordinator.address, "0.0.0.0:7777": "127.0.0.1:0"}

    def as_run(line: str) -> list[str]:
        for theirs, ours in here.items():
            line = line.replace(theirs, ours)
        return shlex.split(line)

    assert "labgrid-coordinator -l 0.0.0.0:20408" in lines  # what the coordinator fixture runs, on 127.0.0.1:0
    runs = [as_run(line) for line in lines if line.startswith("jumpstarter run ")]
    for run in runs:  # rpi4-1.yaml serves a board; rpi4-7-power.yaml and rpi4-7-serial.yaml parts of one
        name = Path(run[2]).stem
        export = name.rpartition("-")[2] if "--labgrid-place" in run else "board"
        config = exporter_yaml(tmp_path / run[2], {export: BOARD}, name=name, labels={"board": "rpi4"})
        exporter_process(config, *run[3:])
    names = {Path(run[2]).stem for run in runs}
    assert names == {"rpi4-1", "rpi4-7-power", "rpi4-7-serial"}
    with directory(coordinator) as session:
        until(lambda: names <= {r[0] for r in session.resources}, "the exporters published")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    (tags,) = [as_run(line) for line in lines if line.startswith("labgrid-client ")]
    subprocess.run(tags, check=True, capture_output=True, timeout=60, env=env, cwd=tmp_path)
    (listing,) = [as_run(line) for line in lines if line.startswith("jumpstarter lab ")]
    shown = subprocess.run(listing, capture_output=True, text=True, timeout=60, env=env)
    assert shown.stdout.startswith("rpi4-1  [board=rpi4, site=b2]  free\n    exporter: 127.0.0.1:"), shown
    assert re.search(
        r"^rpi4-7  \[board=rpi4\]  free\n    exporter rpi4-7-power: 127.0.0.1:\d+: free\n"
        r"    exporter rpi4-7-serial: 127.0.0.1:\d+: free\n",
        shown.stdout,
        re.M,
    ), shown
    (ci,) = [as_run(line) for line in lines if line.startswith("pytest ")]
    (tmp_path / "hardware").mkdir()
    (tmp_path / "hardware" / "test_lab.py").write_text(
        "import pytest\n\n@pytest.mark.exporter(board='rpi4')\ndef test_it(board):\n    assert board.add(1, 2) == 3\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", *ci, "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


def test_sigterm_while_queued_cancels_the_reservation(pytester, boards, coordinator):
    boards(1)
    pytester.makepyfile(test_lab=holding_tests(1, 0.1))
    with directory(coordinator) as session:
        session.acquire("b0")
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--lab", coordinator.url]
        run = subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        until(session.reservations, "the run's reservation")
        run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=60)[0]
        assert "SIGTERM" in output, output
        assert session.reservations() == [], output  # cancelled on the way out, not left to expire in 60 s


def test_a_higher_priority_claim_goes_first(boards, coordinator):
    import threading

    from pytest_jumpstarter.labgrid import LabgridPool

    boards(1)
    order: list[str] = []
    with directory(coordinator) as session:
        session.acquire("b0")

        def claim(priority: float, who: str) -> None:
            pool = LabgridPool(coordinator.address, None, False, {}, priority)
            try:
                pool.claim({"board": {}}, who, 60).release()
                order.append(who)
            finally:
                pool.close()

        low = threading.Thread(target=claim, args=(0, "low"))
        low.start()
        until(lambda: len(session.reservations()) == 1, "the low claim queued")
        high = threading.Thread(target=claim, args=(10, "high"))
        high.start()
        until(lambda: len(session.reservations()) == 2, "the high claim queued")
        session.release("b0")
        low.join(60)
        high.join(60)
    assert order == ["high", "low"]


def test_two_runs_needing_two_boards_each_never_deadlock(pytester, exporter_process, coordinator, tmp_path):
    for name, export in (("b0", "board"), ("b1", "peer")):
        config = exporter_yaml(tmp_path / f"{name}.yaml", {export: BOARD}, name=name, config=f"name: {name}")
        exporter_process(config, "--listen", "127.0.0.1:0", "--labgrid", coordinator.url)
    with directory(coordinator) as session:
        until(lambda: len(session.resources) == 2, "both published")
    pytester.makepyfile(
        test_link="".join(
            f"def test_{i}(board, peer):\n    assert board.wait(0.2) == 0.2 and peer.add(1, 1) == 2\n\n"
            for i in range(3)
        )
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--lab",
        coordinator.url,
        "--lease-timeout",
        "90",
    ]
    runs = [subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
