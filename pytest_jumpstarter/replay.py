"""``--jumpstarter-replay DIR``: answer the tests' fixtures from recordings, with no exporter at all.

An export's fixture gives the same client classes the recording's test had, talking to a ``ReplayConnection``:
each call must be the next one recorded for the running test (same driver, method and arguments, as they travel
on the wire), and gets the recorded result or error. The first step that differs fails the test naming
expected and got and the file; so does a test that makes fewer calls than recorded, and a test with no
recording. Nothing is sent anywhere: a replayed test runs at mocked-test speed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import anyio
import pytest

from jumpstarter import errors
from jumpstarter.client.connection import OwnPortal
from jumpstarter.client.streams import AsyncStreamBase, BlockingStreamBase
from jumpstarter.common.secrets import redact
from pytest_jumpstarter import redaction, tapes
from pytest_jumpstarter.leasing import ROOT, fixture_definitions

if TYPE_CHECKING:
    from jumpstarter.client.connection import Connection


WAKE = 0.02  # seconds between looks of an async receive that waits for its stream's close


class ReplayMismatch(AssertionError):
    """The test did something other than what its recording holds."""


class Replayer:
    """The plugin's room for replay: the recordings of a folder, and each test's place in its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        if not folder.is_dir():
            raise pytest.UsageError(f"jumpstarter: --jumpstarter-replay {folder}: no such folder of recordings")
        # Each file is read when its module is collected, not before: an unrelated big recording costs nothing.
        self.files: dict[Path, dict[str, dict] | str] = {}  # recording file -> test key -> recording, or its problem
        self.add_fixtures: Callable[[list[str]], None] | None = None  # registers export fixtures (Fixtures.add)
        self.tape: Tape | None = None  # the running test's

    def names(self) -> list[str]:
        """The export names the recordings read so far use: each gets a fixture."""
        names = {
            name
            for tests in self.files.values()
            if isinstance(tests, dict)
            for test in tests.values()
            for name in test["fixtures"]
        }
        return sorted(names - {ROOT, tapes.ENV})

    def recordings(self, file: Path) -> dict[str, dict] | str:
        """The tests recorded in ``file`` (none if there is no such file), read at first use; or why the file
        can't be used (a damaged or hostile file costs only its own module's tests)."""
        if file not in self.files:
            try:
                self.files[file] = tapes.load(file, self.folder) if os.path.lexists(file) else {}
            except (OSError, ValueError) as exc:
                self.files[file] = f"jumpstarter: can't replay this module's tests: {tapes.problem(file, exc)}"
        return self.files[file]

    def client(self, fixture: str, request: pytest.FixtureRequest) -> Any:
        """The client fixture ``fixture`` gives the running test, built from its recording, until it ends."""
        client, close = self._build(fixture, request.node.nodeid)
        request.addfinalizer(close)
        return client

    @contextmanager
    def env(self) -> Iterator[Any]:
        """The root client ``jumpstarter.utils.env()`` gives the running test, built from its recording."""
        client, close = self._build(tapes.ENV, "")
        try:
            yield client
        finally:
            close()

    def _build(self, fixture: str, nodeid: str) -> tuple[Any, Callable[[], None]]:
        """The recorded test's client of ``fixture``, and what ends its tree and connection."""
        from jumpstarter.client.tree import client_from_report

        tape = self.tape
        if tape is None or tape.recording is None:
            self._no_recording(tape.nodeid if tape else nodeid, tape.file if tape else self.folder)
        path = tape.recording.get("fixtures", {}).get(fixture)
        if path is None:
            pytest.fail(
                f"jumpstarter: the recording of {tape.nodeid} ({tape.file}) has no fixture {fixture!r} (it has "
                f"{', '.join(tape.recording.get('fixtures', {})) or 'none'}): record the test again",
                pytrace=False,
            )
        connection = ReplayConnection(self, tape.file)
        # A ReplayConnection stands where a Connection does: the clients use only the calls it answers.
        root = client_from_report(cast("Connection", connection), tapes.report(tape.recording.get("drivers", {})))

        def close() -> None:  # as live: the tree ends with its fixture
            try:
                root._close_tree()
            finally:
                connection.close()

        client = root
        for step in path.split(".") if path != tapes.ROOT_PATH else ():
            client = client.children[step]
        return client, close

    # Hooks ------------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_collectstart(self, collector: pytest.Collector) -> None:
        """A test module's recording is read as the module is collected: its export names get fixtures before
        its tests ask for them."""
        if not isinstance(collector, pytest.Module):
            return
        tests = self.recordings(tapes.file_for(self.folder, collector.path, collector.nodeid))
        if isinstance(tests, dict) and self.add_fixtures is not None:
            self.add_fixtures(sorted({name for test in tests.values() for name in test["fixtures"]} - {ROOT}))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        file = tapes.file_for(self.folder, item.path, item.nodeid)
        tests = self.recordings(file)
        if isinstance(tests, str):
            self.tape = None
            pytest.fail(tests, pytrace=False)
        self.tape = Tape(item.nodeid, file, tests.get(tapes.test_key(item.nodeid)))
        if self.tape.recording is None and any(
            name != "request" and not fixture_definitions(item, name) for name in getattr(item, "fixturenames", ())
        ):  # an unrecorded module's export names have no fixture: say why, not pytest's "fixture not found"
            self._no_recording(item.nodeid, file)

    def _no_recording(self, nodeid: str, file: Path) -> NoReturn:
        pytest.fail(
            f"jumpstarter: no recording of {nodeid} in {file}: record it on the "
            f"bench with `pytest --exporter ... --jumpstarter-record {self.folder}`",
            pytrace=False,
        )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        """Each test's difference from its recording shows once: as the test's failure where the test didn't fail
        of it (it swallowed it with ``except Exception``, or another thread met it), and not again as an error
        at teardown where the derailed test's teardown meets it too. Calls the test never made, or a difference
        first met at teardown, fail the teardown."""
        report = yield
        tape = self.tape
        if tape is None or tape.nodeid != item.nodeid:
            return report
        if call.when == "call" and report.passed and tape.mismatch:
            report.outcome = "failed"
            report.longrepr = f"jumpstarter replay: {tape.mismatch}"
        elif (
            call.when == "call"
            and tape.mismatch
            and not isinstance(getattr(call.excinfo, "value", None), ReplayMismatch)
        ):
            report.sections.append(("jumpstarter replay", tape.mismatch))  # below a task group's traceback, say
        if call.when != "teardown":
            tape.failed = tape.failed or report.failed
            return report
        self.tape = None
        if tape.failed and report.failed and call.excinfo is not None and _replay_only(call.excinfo.value):
            report.outcome, report.longrepr = "passed", None  # the test's failure said it already
        problem = tape.problem()
        if problem and not tape.failed and report.passed:
            report.outcome = "failed"
            report.longrepr = f"jumpstarter replay: {problem}"
        return report


def _replay_only(exc: BaseException) -> bool:
    """Whether ``exc`` is a replay mismatch, or a group of nothing else (a task group's, a port forward's)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_replay_only(inner) for inner in exc.exceptions)
    return isinstance(exc, ReplayMismatch)


class Tape:
    """One test's recording, and how far the test has got through it."""

    def __init__(self, nodeid: str, file: Path, recording: dict | None) -> None:
        self.nodeid, self.file, self.recording = nodeid, file, recording
        self.steps: list[dict] = list(recording.get("calls", [])) if recording else []
        self.position = 0
        self.aliases: dict[str, str] = {}
        self.mismatch: str | None = None  # the first difference
        self.failed = False  # the test's report shows a failure already (at set-up or in the test)

    def fail(self, text: str) -> ReplayMismatch:
        message = f"{text} (replaying {self.nodeid} from {self.file})"
        if self.mismatch is None:
            self.mismatch = message
        return ReplayMismatch(message)

    def next(self, kind: str, what: str, args: tuple | None = None) -> dict:
        """The recorded step that must come now: a ``kind`` step of ``what`` with these arguments."""
        __tracebackhide__ = True
        got: dict[str, Any] = {kind: what}
        if args is not None:
            got["args"] = tapes.wire_args(args, self.aliases)
        number = self.position + 1
        if self.position >= len(self.steps):
            raise self.fail(
                f"step {number}: expected no more driver calls (the recording has {len(self.steps)}), "
                f"got {redact(tapes.show(got))}"
            )
        expected = self.steps[self.position]
        if expected.get(kind) != what or (
            "args" in got and not redaction.matches(expected.get("args", []), got["args"])
        ):
            raise self.fail(f"step {number} differs: expected {tapes.show(expected)}, got {redact(tapes.show(got))}")
        self.position += 1
        return expected

    def problem(self) -> str | None:
        if self.mismatch:
            return self.mismatch
        if self.position < len(self.steps):
            missing = self.steps[self.position]
            return (
                f"the test made {self.position} of the {len(self.steps)} recorded driver calls; the first it didn't "
                f"make: {tapes.show(missing)} (replaying {self.nodeid} from {self.file})"
            )
        return None


def _raise(tape: Tape, entry: dict, target: str, method: str) -> None:
    """The recorded error, as the same class the live call raised."""
    __tracebackhide__ = True
    failure = entry.get("error")
    if failure is None:
        return
    cls = getattr(errors, failure.get("kind", ""), None)
    message = failure.get("message", "")
    if isinstance(cls, type) and issubclass(cls, errors.DriverError):
        raise cls(message, target=target, method=method)
    if isinstance(cls, type) and issubclass(cls, errors.JumpstarterError):
        raise cls(message)
    raise errors.DriverError(f"{failure.get('kind')}: {message}", target=target, method=method)


class ReplayConnection:
    """Stands where a client's connection does, answering from the running test's recording."""

    def __init__(self, replayer: Replayer, file: Path) -> None:
        self._replayer = replayer
        self.address = f"recording {file}"
        self.observers: list[Callable] = []
        self.metadata: tuple = ()
        self.closed = False
        self._portal = OwnPortal()
        self._streams: list[ReplayStream] = []  # released when the connection ends: a receive waiting on one ends

    @property
    def tape(self) -> Tape:
        tape = self._replayer.tape
        if tape is None:
            raise ReplayMismatch("a replayed client was used outside a test")
        return tape

    def _answer(self, target: str, method: str, args: tuple) -> Any:
        __tracebackhide__ = True
        entry = self.tape.next("call", f"{target}.{method}".lstrip("."), args)
        try:
            _raise(self.tape, entry, target, method)
        except Exception as exc:
            self._notify(target, method, args, exc)
            raise
        result = entry.get("result")
        self._notify(target, method, args, result)
        return result

    def _notify(self, target: str, method: str, args: tuple, outcome: Any) -> None:
        for observer in self.observers:
            observer(target, method, args, outcome, 0.0)

    def call(self, uuid: str, target: str, method: str, args: tuple) -> Any:
        __tracebackhide__ = True
        return self._answer(target, method, args)

    async def call_async(self, uuid: str, target: str, method: str, args: tuple) -> Any:
        __tracebackhide__ = True
        return self._answer(target, method, args)

    def _items(self, target: str, method: str, args: tuple) -> Iterator[Any]:
        __tracebackhide__ = True
        tape = self.tape
        entry = tape.next("generate", f"{target}.{method}".lstrip("."), args)
        yield from entry.get("items", [])
        _raise(tape, entry, target, method)
        if entry.get("end") == "stopped":
            raise tape.fail(
                f"{target}.{method}: the recorded test stopped reading after {len(entry.get('items', []))} items; "
                "this one reads on"
            )

    def streamingcall(self, uuid: str, target: str, method: str, args: tuple) -> Iterator[Any]:
        __tracebackhide__ = True
        yield from self._items(target, method, args)

    async def streamingcall_async(self, uuid: str, target: str, method: str, args: tuple) -> AsyncIterator[Any]:
        __tracebackhide__ = True
        for item in self._items(target, method, args):
            yield item

    def stream(self, uuid: str, target: str, method: str) -> ReplayStream:
        tape = self.tape
        entry = tape.next("stream", f"{target}.{method}".lstrip("."))
        stream = ReplayStream(tape, f"{target}.{method}", entry.get("traffic", []))
        self._streams.append(stream)
        return stream

    def stream_async(self, uuid: str, target: str, method: str) -> AsyncReplayStream:
        return AsyncReplayStream(self.stream(uuid, target, method))

    @asynccontextmanager
    async def resource_async(
        self, uuid: str, target: str, source: Any, content_encoding: str | None = None
    ) -> AsyncIterator[dict]:
        """The upload's bytes are read and must be those recorded (size and digest); a recorded dump is sent
        back into ``source``."""
        from jumpstarter.client.uploads import chunks_of, upload_source

        tape = self.tape
        entry = tape.next("upload", target)
        source = upload_source(source, target)
        digest, size = hashlib.sha256(), 0
        async for chunk in chunks_of(source):
            digest.update(chunk)
            size += len(chunk)
        if (size, digest.hexdigest()) != (entry.get("size"), entry.get("sha256")):
            raise tape.fail(
                f"upload to {target}: expected {entry.get('size')} bytes with sha256 {entry.get('sha256')}, "
                f"got {size} bytes with sha256 {digest.hexdigest()}"
            )
        handle = dict(entry.get("handle") or {"kind": "client_stream", "uuid": "upload"})
        fresh = f"replay-upload-{tape.position}"  # a uuid of this run, written as the recorded handle's name
        tape.aliases[fresh], handle["uuid"] = handle["uuid"], fresh
        try:
            yield handle
        finally:
            if "returned" in entry and hasattr(source, "send"):
                await source.send(tapes.chunk(entry["returned"]))
            if hasattr(source, "send_eof"):
                await source.send_eof()
            if hasattr(source, "aclose"):
                await source.aclose()

    def reset(self) -> None:
        self.tape.next("reset", "exporter")

    def follow_logs(self, on_record: Callable) -> Callable[[], None]:
        return lambda: None  # no exporter, no log

    def hold(self, lease_id: str | None) -> None:
        pass

    def portal(self) -> Any:
        """An event loop in a thread, for clients that run their async API from blocking code."""
        return self._portal.get()

    def close(self) -> None:
        self.closed = True
        for stream in self._streams:
            stream.released.set()
        self._portal.close()


class ReplayStream(BlockingStreamBase):
    """A byte stream that plays the driver's side of a recorded one: what the test sends must be the recorded
    bytes (chunked any way), and it receives the recorded chunks, then the end or error. A receive the recorded
    test left waiting when it closed the stream (or cancelled the receive) waits here too, until the stream is
    closed (or the receive cancelled), and then ends as the recorded one did."""

    def __init__(self, tape: Tape, where: str, traffic: list) -> None:
        self._tape, self._where = tape, where
        self._expected = b"".join(tapes.chunk(s["send"]) for s in traffic if isinstance(s, dict) and "send" in s)
        self._sent = 0
        self._incoming = [
            s for s in traffic if s in ("end", tapes.PENDING) or (isinstance(s, dict) and "send" not in s)
        ]
        self._closed = False
        self.released = threading.Event()  # set when the stream is closed or its connection ends: waits end

    @property
    def waits(self) -> bool:
        """Whether the next receive is one the recorded test left waiting until the stream was closed."""
        return bool(self._incoming) and self._incoming[0] == tapes.PENDING

    def send(self, data: bytes) -> None:
        __tracebackhide__ = True
        data = bytes(data)
        expected = self._expected[self._sent : self._sent + len(data)]
        if data != expected:
            raise self._tape.fail(
                f"byte stream {self._where}: after {self._sent} bytes sent as recorded, expected to send "
                f"{expected!r}, got {data!r}"
            )
        self._sent += len(data)

    def send_eof(self) -> None:
        pass

    def receive(self) -> bytes:
        __tracebackhide__ = True
        if self.waits:
            self.released.wait()
        return self.received()

    def received(self) -> bytes:
        """The next recorded step of the driver's side, once any wait for the close is over."""
        __tracebackhide__ = True
        if self.waits and self.released.is_set():
            self._incoming.pop(0)
            if not self._incoming:  # the recorded receive was cancelled, this one ends with the stream
                raise anyio.ClosedResourceError(f"byte stream {self._where} was closed")
        if not self._incoming:
            raise self._tape.fail(f"byte stream {self._where}: the test receives more than the recorded test did")
        step = self._incoming[0]
        if step == "end":
            raise anyio.EndOfStream
        self._incoming.pop(0)
        if "error" in step:
            self._incoming.insert(0, "end")
            _raise(self._tape, step, *self._where.rsplit(".", 1))
        return tapes.chunk(step["receive"])

    def close(self) -> None:
        if not self._closed and self._sent < len(self._expected):
            self._tape.fail(
                f"byte stream {self._where}: the test sent {self._sent} of the {len(self._expected)} recorded bytes; "
                f"the rest: {self._expected[self._sent : self._sent + 60]!r}"
            )
        self._closed = True
        self.released.set()


class AsyncReplayStream(AsyncStreamBase):
    """The async twin of ReplayStream."""

    def __init__(self, stream: ReplayStream) -> None:
        self._stream = stream

    async def send(self, data: bytes) -> None:
        self._stream.send(data)

    async def send_eof(self) -> None:
        self._stream.send_eof()

    async def receive(self) -> bytes:
        while self._stream.waits and not self._stream.released.is_set():  # until closed, or cancelled meanwhile
            await anyio.sleep(WAKE)
        return self._stream.received()

    async def aclose(self) -> None:
        self._stream.close()
