# ruff: noqa: F811
"""Hostile or odd input to ``jumpstarter run --labgrid COORD --labgrid-place NAME`` (several exporters publishing
into one place): each is refused at start with an error naming the problem, and the lab is left as it was. A
real labgrid-coordinator on loopback, real exporters of ours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from samples import exporter_yaml

pytest.importorskip("labgrid", reason="labgrid is in the dev extra: run scripts/setup.sh")

from labgrid_lab import BOARD, boards, coordinator, directory, publish, until  # noqa: E402, F401

from jumpstarter.labgrid.publish import Publisher  # noqa: E402

pytestmark = pytest.mark.e2e


def part(folder: Path, name: str, labels: dict[str, str]) -> Path:
    return exporter_yaml(folder / f"{name}.yaml", {"board": BOARD}, name=name, labels=labels, config=f"name: {name}")


def refused(config: Path, coordinator, *args: str) -> str:
    """Start an exporter publishing to ``coordinator`` with ``args``: it must stop at once (exit code 2, not serve
    on); its standard error."""
    command = [sys.executable, "-m", "jumpstarter", "run", str(config), "--listen", "127.0.0.1:0"]
    done = subprocess.run([*command, "--labgrid", coordinator.url, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stderr


@pytest.mark.parametrize(
    "name, problem",
    [
        ("", "--labgrid-place: give the place's name"),
        ("rpi4 7", "--labgrid-place: 'rpi4 7' can't name a labgrid place: give 1 to 63 letters, digits, "),
        ("rack/rpi4-7", "--labgrid-place: 'rack/rpi4-7' can't name a labgrid place"),
        ("+rpi4-7", "--labgrid-place: '+rpi4-7' can't name a labgrid place"),
        ("x" * 5000, "--labgrid-place: 'xxxxxxxxxx"),
    ],
    ids=["empty", "space", "slash", "plus", "long"],
)
def test_a_place_name_labgrid_cant_take_is_refused(coordinator, tmp_path, name, problem):
    stderr = refused(part(tmp_path, "b7-power", {"board": "rpi4"}), coordinator, "--labgrid-place", name)
    assert problem in stderr, stderr
    if len(name) > 70:  # named, but not in full
        assert "... (5000 characters) can't name a labgrid place" in stderr and len(stderr) < 2000, stderr
    with directory(coordinator) as session:
        assert not session.places and not session.resources  # nothing published


def test_an_exporter_name_that_cant_name_its_place_is_refused(coordinator, tmp_path):
    """Without --labgrid-place the place is named after the exporter."""
    stderr = refused(part(tmp_path, "rpi4+7", {"board": "rpi4"}), coordinator)
    assert (
        "--labgrid: this exporter's name names its place, and 'rpi4+7' can't name a labgrid place: give 1 to 63 "
    ) in stderr and "; give --labgrid-place NAME" in stderr, stderr
    with directory(coordinator) as session:
        assert not session.places and not session.resources


def test_exporters_of_one_place_giving_it_different_tags_are_refused(publish, coordinator, tmp_path):
    publish([part(tmp_path, "b7-power", {"board": "rpi4", "site": "b2"})], ["b7-power"], "--labgrid-place", "b7")
    serial = part(tmp_path, "b7-serial", {"board": "rpi5", "site": "b2", "console": "uart"})
    stderr = refused(serial, coordinator, "--labgrid-place", "b7")
    assert (
        "--labgrid-place b7: its exporter b7-power gives the board other tags (board=rpi5 vs board=rpi4, this "
        "exporter's first): the exporters of one board must agree on its labels"
    ) in stderr, stderr
    with directory(coordinator) as session:
        assert [m[0] for m in session.places["b7"].matches] == ["b7-power"]  # the serial part did not join


def test_exporters_that_published_at_once_with_different_tags_are_a_clear_error_to_a_claim(
    pytester, boards, publish, coordinator, tmp_path
):
    """Two started at the same moment each see no other exporter in the place yet: the claim finds them out."""
    boards(1)  # b0 (kind=demo): the run's `board` fixture
    publish([part(tmp_path, "b7-power", {"board": "rpi4"})], ["b7-power"], "--labgrid-place", "b7")
    late = Publisher(coordinator.address, "b7-serial", "127.0.0.1:9", False, ["serial"], {"board": "rpi5"}, "b7")
    late._thread.start()  # past the check at start(), as the second of two racing exporters is
    try:
        with directory(coordinator) as session:
            until(lambda: len(session.resources) == 3, "b7-serial published")
        pytester.makepyfile(
            test_lab="import pytest\n@pytest.mark.exporter(board='rpi4')\ndef test_it(board):\n    pass\n"
        )
        result = pytester.runpytest_subprocess("--lab", coordinator.url, "--lease-timeout", "60")
    finally:
        late.stop()
    result.assert_outcomes(errors=1)  # at once: not waiting out the lease timeout
    result.stdout.fnmatch_lines(
        ["*place 'b7': its exporters b7-power and b7-serial disagree on its tags (board=rpi4 vs board=rpi5)*"]
    )


def test_joining_a_place_an_admin_made_and_holds_is_refused(coordinator, tmp_path):
    with directory(coordinator) as session:
        session.add_place("b7")
        session.acquire("b7")
        stderr = refused(part(tmp_path, "b7-power", {"board": "rpi4"}), coordinator, "--labgrid-place", "b7")
        assert not session.places["b7"].matches and not session.resources  # the admin's place is as it was
    assert (
        f"--labgrid-place b7: the place is acquired by lab-admin/tests at the labgrid coordinator "
        f"{coordinator.address}: an exporter joins a place only while it is free"
    ) in stderr, stderr
    assert "release it (labgrid-client -p b7 release) or publish into another place" in stderr


def test_the_same_exporter_name_started_twice_into_one_place_is_refused(publish, coordinator, tmp_path):
    (first,) = publish([part(tmp_path, "b7-power", {"board": "rpi4"})], ["b7-power"], "--labgrid-place", "b7")
    (tmp_path / "again").mkdir()
    again = part(tmp_path / "again", "b7-power", {"board": "rpi4"})  # the same name, another copy of its config
    stderr = refused(again, coordinator, "--labgrid-place", "b7")
    assert (
        f"--labgrid: an exporter named 'b7-power' is published at the labgrid coordinator {coordinator.address} "
        f"already (at {first.address}): the coordinator takes one exporter of a name"
    ) in stderr, stderr
    with directory(coordinator) as session:
        (resource,) = session.resources.values()
        assert resource.params["address"] == first.address  # the first one's stays


def test_an_exporter_restarted_before_the_coordinator_dropped_it_publishes_once_it_has(coordinator):
    """A restart (systemd's Restart=, a host back on the network) finds its own earlier copy still published, at its
    own address: not refused as a second exporter of its name; it publishes once the coordinator drops the old one.
    Another exporter of that name, at another address, is still refused."""
    from jumpstarter.labgrid.preflight import PublishError

    before = Publisher(coordinator.address, "b8", "127.0.0.1:9", False, ["board"], {"board": "rpi4"}).start()
    assert before.published.wait(30), "the first copy never published"
    restarted = Publisher(coordinator.address, "b8", "127.0.0.1:9", False, ["board"], {"board": "rpi4"})
    try:
        restarted.start()  # no PublishError
        with pytest.raises(PublishError, match="an exporter named 'b8' is published .* already \\(at 127.0.0.1:9\\)"):
            Publisher(coordinator.address, "b8", "127.0.0.1:10", False, ["board"], {"board": "rpi4"}).start()
        before.stop()
        assert restarted.published.wait(60), "the restarted copy never published after the old one was dropped"
    finally:
        before.stop()
        restarted.stop()
