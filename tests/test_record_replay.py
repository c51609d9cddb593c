"""Record on the bench, replay in CI: --jumpstarter-record DIR, then --jumpstarter-replay DIR with no exporter."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from samples import EXAMPLES

BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"

BOARD_TESTS = """
    import anyio
    import pytest
    from jumpstarter.errors import DriverInvalidArgument
    from jumpstarter_driver_demo.client import BoardClient

    def test_calls(board):
        assert isinstance(board, BoardClient)
        assert board.describe() == {"name": "demo-1", "baudrate": 9600}
        board.power.on()
        assert board.power.read() is True
        assert board.add(2, 3) == 5
        assert list(board.count(3)) == [0, 1, 2]
        with pytest.raises(DriverInvalidArgument, match="bad"):
            board.fail("value", "bad")

    def test_stream(board):
        with board.stream("console") as console:
            console.send(b"hello")
            assert console.receive() == b"hello"
            console.send(bytes([0, 254]))
            assert console.receive() == bytes([0, 254])

    def test_upload_and_async(board):
        assert board.checksum(b"x" * 100_000)["size"] == 100_000
        assert board.portal.call(board.echo_async, "async") == "async"

    def test_stops_reading(board):
        for tick in board.count(10):
            if tick == 2:
                break

    def test_root(exporter):
        assert exporter.board.add(1, 1) == 2
"""


def record(pytester, *args: str):
    return pytester.runpytest_subprocess(
        "--exporter", str(BOARD_YAML), "--exporter-passphrase", "s3cret", "--jumpstarter-record", "rec", *args
    )


def test_record_then_replay_without_an_exporter(pytester):
    pytester.makepyfile(test_board=BOARD_TESTS)
    result = record(pytester)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*jumpstarter: recorded 5 tests' driver calls in 1 files under *rec"])
    written = (pytester.path / "rec" / "test_board.yaml").read_text()
    assert "s3cret" not in written and "127.0.0.1" not in written and "unix:" not in written
    tests = yaml.safe_load(written)["tests"]
    assert sorted(tests) == ["test_calls", "test_root", "test_stops_reading", "test_stream", "test_upload_and_async"]
    calls = tests["test_calls"]["calls"]
    assert calls[0] == {"call": "board.describe", "result": {"baudrate": 9600, "name": "demo-1"}}
    assert calls[3] == {"call": "board.add", "args": [2, 3], "result": 5}
    assert calls[4] == {"generate": "board.count", "args": [3], "items": [0, 1, 2], "end": "done"}
    assert calls[5]["error"] == {"kind": "DriverInvalidArgument", "message": "bad"}
    assert "    - call: board.add\n      args: [2, 3]\n      result: 5\n" in written  # a line a fact
    traffic = tests["test_stream"]["calls"][0]["traffic"]
    assert traffic == [{"send": "hello"}, {"receive": "hello"}, {"send": b"\x00\xfe"}, {"receive": b"\x00\xfe"}]
    upload = tests["test_upload_and_async"]["calls"][0]
    assert upload["upload"] == "board" and upload["size"] == 100_000 and upload["handle"]["uuid"] == "upload 1"
    assert tests["test_stops_reading"]["calls"][0]["end"] == "stopped"
    assert tests["test_root"]["fixtures"] == {"exporter": "."}

    replayed = pytester.runpytest_subprocess("--jumpstarter-replay", "rec")
    replayed.assert_outcomes(passed=5)
    replayed.stdout.fnmatch_lines(["jumpstarter: replaying the recordings under *rec; no exporter is used"])
    parallel = pytester.runpytest_subprocess("--jumpstarter-replay", "rec", "-n", "2")
    parallel.assert_outcomes(passed=5)


def test_recording_under_xdist_writes_the_same_file(pytester):
    pytester.makepyfile(test_board=BOARD_TESTS)
    record(pytester).assert_outcomes(passed=5)
    alone = (pytester.path / "rec" / "test_board.yaml").read_text()
    (pytester.path / "rec" / "test_board.yaml").unlink()
    result = record(pytester, "--exporter", str(BOARD_YAML), "-n", "2")
    result.assert_outcomes(passed=5)
    assert (pytester.path / "rec" / "test_board.yaml").read_text() == alone


def test_re_recording_some_tests_keeps_the_others(pytester):
    pytester.makepyfile(test_board=BOARD_TESTS)
    record(pytester).assert_outcomes(passed=5)
    pytester.makepyfile(test_board=BOARD_TESTS.replace("board.add(1, 1) == 2", "board.add(1, 2) == 3"))
    record(pytester, "-k", "test_root").assert_outcomes(passed=1, deselected=4)
    tests = yaml.safe_load((pytester.path / "rec" / "test_board.yaml").read_text())["tests"]
    assert len(tests) == 5
    assert tests["test_root"]["calls"] == [{"call": "board.add", "args": [1, 2], "result": 3}]


REPLAYED = """
    def test_changed(board):
        board.power.on()
        assert board.add(2, 4) == 6

    def test_swallowed(board):
        try:
            board.add(9, 9)
        except Exception:
            pass

    def test_fewer(board):
        board.add(1, 1)

    def test_sends_otherwise(board):
        with board.stream("console") as console:
            console.send(b"help")

    def test_unrecorded(board):
        board.power.on()

    def test_no_hardware():
        pass
"""

RECORDING = """
version: 1
tests:
  test_changed:
    fixtures: {board: board}
    drivers:
      board: jumpstarter_driver_demo.client.BoardClient
      board.power: jumpstarter_driver_demo.client.PowerClient
    calls:
    - call: board.power.on
    - {call: board.add, args: [2, 3], result: 5}
  test_swallowed:
    fixtures: {board: board}
    drivers: {board: jumpstarter_driver_demo.client.BoardClient}
    calls:
    - {call: board.add, args: [1, 1], result: 2}
  test_fewer:
    fixtures: {board: board}
    drivers: {board: jumpstarter_driver_demo.client.BoardClient}
    calls:
    - {call: board.add, args: [1, 1], result: 2}
    - call: board.power.off
  test_sends_otherwise:
    fixtures: {board: board}
    drivers: {board: jumpstarter_driver_demo.client.BoardClient}
    calls:
    - stream: board.console
      traffic: [send: hello, receive: hello]
"""


def test_a_replay_that_differs_fails_naming_the_step_and_the_file(pytester):
    pytester.makepyfile(test_board=REPLAYED)
    (pytester.path / "rec").mkdir()
    (pytester.path / "rec" / "test_board.yaml").write_text(RECORDING)
    result = pytester.runpytest_subprocess("--jumpstarter-replay", "rec")
    outcomes = result.parseoutcomes()
    assert (outcomes["failed"], outcomes["errors"], outcomes["passed"]) == (3, 2, 2)  # passed: 1 then errored
    where = "(replaying test_board.py::{} from */rec/test_board.yaml)"
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_fewer*",
            "*the test made 1 of the 2 recorded driver calls; the first it didn't make: board.power.off() "
            + where.format("test_fewer"),
            "*ERROR at setup of test_unrecorded*",
            "*no recording of test_board.py::test_unrecorded in */rec/test_board.yaml: record it on the bench with "
            "`pytest --exporter ... --jumpstarter-record *rec`",
            "*ReplayMismatch: step 2 differs: expected board.add(2, 3), got board.add(2, 4) "
            + where.format("test_changed"),
            "*_ test_swallowed _*",  # the test swallowed the difference: it fails of it all the same
            "jumpstarter replay: step 1 differs: expected board.add(1, 1), got board.add(9, 9) "
            + where.format("test_swallowed"),
            "*byte stream board.console: after 0 bytes sent as recorded, expected to send b'hell', got b'help'*",
        ]
    )
    assert "test_no_hardware" not in "\n".join(line for line in result.outlines if "FAILED" in line or "ERROR" in line)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jumpstarter-record", "rec"], "*--jumpstarter-record *rec records the calls made to exporters, and none*"),
        (["--jumpstarter-record", "a", "--jumpstarter-replay", "b"], "*use one at a time*"),
        (["--jumpstarter-replay", "missing"], "*--jumpstarter-replay *missing: no such folder of recordings*"),
    ],
)
def test_record_and_replay_usage_errors(pytester, args, message):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_file_that_is_not_a_recording_is_named(pytester):
    """Its module's tests fail naming it; a file of a module that doesn't run is not even read."""
    pytester.makepyfile(test_board="def test_x():\n    pass\n")
    (pytester.path / "rec").mkdir()
    (pytester.path / "rec" / "test_board.yaml").write_text("- just a list\n")
    (pytester.path / "rec" / "notes.yaml").write_text("- just a list\n")
    result = pytester.runpytest_subprocess("--jumpstarter-replay", "rec")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*rec/test_board.yaml: not a jumpstarter recording (no 'tests' mapping)*"])
    assert "notes.yaml" not in result.stdout.str()


TWO_CHILDREN = """
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
endpoint: ""
token: ""
export:
  board:
    type: jumpstarter_driver_demo.Board
    config: {name: demo-2}
    children:
      power: {type: jumpstarter_driver_demo.Power}
      backup: {type: jumpstarter_driver_demo.Power}
"""

FRESH_CLIENTS = """
    def test_settings_first(board):
        assert board.settings["name"] == "demo-2"

    def test_settings_again(board):  # board.settings asks the driver once per client object
        assert board.settings["baudrate"] == 115200
"""


def record_two(pytester, tests: str) -> dict:
    """Record ``tests`` on the two-children board; the recordings, by test."""
    pytester.makefile(".yaml", two=TWO_CHILDREN)
    pytester.makepyfile(test_board=tests)
    pytester.runpytest_subprocess("--exporter", "two.yaml", "--jumpstarter-record", "rec").assert_outcomes(
        passed=tests.count("def test_")
    )
    return yaml.safe_load((pytester.path / "rec" / "test_board.yaml").read_text())["tests"]


def test_each_test_gets_a_client_tree_of_its_own_live_and_on_replay(pytester):
    """A client that caches what it asked the driver (upstream's ShellClient and get_methods) asks in every test:
    a test's calls, and so its recording, don't depend on which test ran before it on the worker."""
    tests = record_two(pytester, FRESH_CLIENTS)
    describe = {"call": "board.describe", "result": {"baudrate": 115200, "name": "demo-2"}}
    assert tests["test_settings_first"]["calls"] == tests["test_settings_again"]["calls"] == [describe]
    pytester.runpytest_subprocess("--jumpstarter-replay", "rec").assert_outcomes(passed=2)
    pytester.runpytest_subprocess("--jumpstarter-replay", "rec", "-k", "again").assert_outcomes(passed=1, deselected=1)
    pytester.runpytest_subprocess("--jumpstarter-replay", "rec", "-n", "2").assert_outcomes(passed=2)


def test_a_replayed_tree_has_the_exporters_order_of_children(pytester):
    tests = record_two(pytester, 'def test_order(board):\n    assert list(board.children) == ["power", "backup"]\n')
    assert list(tests["test_order"]["drivers"]) == ["board", "board.power", "board.backup"]
    pytester.runpytest_subprocess("--jumpstarter-replay", "rec").assert_outcomes(passed=1)


WAITING_READERS = """
    import threading
    import time

    import anyio

    def test_a_reader_cancelled_while_it_waits(board):
        async def main():
            received = []
            async with board.stream_async("console") as console, anyio.create_task_group() as tasks:

                async def read():
                    async for chunk in console:
                        received.append(chunk)

                tasks.start_soon(read)
                await console.send(b"hi")
                with anyio.fail_after(30):
                    while b"".join(received) != b"hi":
                        await anyio.sleep(0.01)
                tasks.cancel_scope.cancel()  # the reader waits for more: it is cancelled so
            return received

        assert board.portal.call(main) == [b"hi"]

    def test_a_reader_thread_waits_until_the_stream_is_closed(board):
        received, ended = [], []
        with board.stream("console") as console:

            def read():
                try:
                    for chunk in console:
                        received.append(chunk)
                except Exception as exc:
                    ended.append(type(exc).__name__)
                else:
                    ended.append("end")

            reader = threading.Thread(target=read)
            reader.start()
            console.send(b"hi")
            deadline = time.monotonic() + 30
            while received != [b"hi"] and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # the reader waits in its next receive
            assert not ended  # the recorded reader waited until the close; so must the replayed one
        reader.join(30)
        assert ended == ["ConnectError"] and received == [b"hi"]

    def test_a_receive_the_recorded_test_never_made(board):
        with board.stream("console") as console:
            console.send(b"hi")
            assert console.receive() == b"hi"
            if RECEIVE_MORE:
                console.receive()
"""


def test_a_receive_left_waiting_when_the_stream_closed_waits_on_replay_too(pytester):
    """Upstream's pexpect console (a port forward's copy task reading the driver's stream, cancelled when the
    ``with`` ends) and a reader thread: their last receive waited when the test closed the stream; on replay
    it waits until the same moment, and ends as it did. A receive the recorded test never made still fails."""
    tests = record_two(pytester, "RECEIVE_MORE = False\n" + textwrap.dedent(WAITING_READERS))
    assert tests["test_a_reader_cancelled_while_it_waits"]["calls"][0]["traffic"][-1] == "pending"
    pytester.runpytest_subprocess("--jumpstarter-replay", "rec").assert_outcomes(passed=3)
    pytester.makepyfile(test_board="RECEIVE_MORE = True\n" + textwrap.dedent(WAITING_READERS))
    replayed = pytester.runpytest_subprocess("--jumpstarter-replay", "rec", "-k", "never_made")
    replayed.assert_outcomes(failed=1, deselected=2)
    replayed.stdout.fnmatch_lines(
        ["*byte stream board.console: the test receives more than the recorded test did (replaying *never_made*"]
    )


DERAILED = """
    import pytest

    @pytest.fixture
    def switched(board):
        yield board
        board.power.off()  # recorded after the test's calls: on replay, after a difference, it differs too

    def test_differs(switched):
        assert switched.add(2, 4) == 6

    def test_differs_in_a_thread(switched):
        import threading

        caught = []
        thread = threading.Thread(target=lambda: caught.append(pytest.raises(AssertionError, switched.add, 9, 9)))
        thread.start()
        thread.join(30)
        assert caught
"""


def test_a_difference_shows_once_as_the_tests_failure(pytester):
    """A difference shows as the test's failure, once: not again as an error at teardown, where the derailed
    test's fixture meets it too; nor as a passed test and an error, when the test didn't fail of it."""
    recording = {
        "fixtures": {"board": "board"},
        "drivers": {
            "board": "jumpstarter_driver_demo.client.BoardClient",
            "board.power": "jumpstarter_driver_demo.client.PowerClient",
        },
        "calls": [{"call": "board.add", "args": [2, 3], "result": 5}, {"call": "board.power.off"}],
    }
    (pytester.path / "rec").mkdir()
    (pytester.path / "rec" / "test_board.yaml").write_text(
        yaml.safe_dump({"version": 1, "tests": {"test_differs": recording, "test_differs_in_a_thread": recording}})
    )
    pytester.makepyfile(test_board=DERAILED)
    result = pytester.runpytest_subprocess("--jumpstarter-replay", "rec")
    result.assert_outcomes(failed=2)
    assert "ERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*ReplayMismatch: step 1 differs: expected board.add(2, 3), got board.add(2, 4) (replaying *test_differs *",
            "jumpstarter replay: step 1 differs: expected board.add(2, 3), got board.add(9, 9) (replaying *",
        ]
    )


UPSTREAM_STYLE = """
    import pytest
    from jumpstarter.utils.env import env

    @pytest.fixture(scope="class")
    def client():  # as jumpstarter_testing.JumpstarterTest's: a class-scoped client from env()
        with env() as client:
            yield client

    class TestUpstreamStyle:
        def test_first(self, client):
            assert client.board.add(1, 2) == 3

        def test_second(self, client):
            assert client.board.settings["name"] == "demo-1"
"""


def test_the_client_env_gives_is_recorded_and_replayed(pytester):
    pytester.makepyfile(test_board=UPSTREAM_STYLE)
    record(pytester).assert_outcomes(passed=2)
    tests = yaml.safe_load((pytester.path / "rec" / "test_board.yaml").read_text())["tests"]
    assert tests["TestUpstreamStyle::test_first"]["fixtures"] == {"env()": "."}
    assert tests["TestUpstreamStyle::test_second"]["calls"] == [
        {"call": "board.describe", "result": {"baudrate": 9600, "name": "demo-1"}}
    ]
    pytester.runpytest_subprocess("--jumpstarter-replay", "rec").assert_outcomes(passed=2)
    pytester.runpytest_subprocess("--jumpstarter-replay", "rec", "-k", "second").assert_outcomes(passed=1, deselected=1)


def test_a_module_never_recorded_is_named_not_a_missing_fixture(pytester):
    """Replay reads only the recordings of the modules that run: a module with none still gets "no recording",
    not pytest's "fixture 'board' not found"; its tests that use no export run as they are."""
    pytester.makepyfile(test_board=REPLAYED)
    (pytester.path / "rec").mkdir()
    (pytester.path / "rec" / "test_board.yaml").write_text(RECORDING)
    pytester.makepyfile(
        test_new="def test_new(board):\n    board.add(1, 1)\n\n\ndef test_plain():\n    assert 1 + 1 == 2\n"
    )
    result = pytester.runpytest_subprocess("--jumpstarter-replay", "rec", "test_new.py")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*no recording of test_new.py::test_new in */rec/test_new.yaml: record it*"])
    assert "fixture 'board' not found" not in result.stdout.str()
