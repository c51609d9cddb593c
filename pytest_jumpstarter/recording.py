"""``--jumpstarter-record DIR``: write down every driver call tests make through their fixtures.

While a test holds an export's client, the clients of its tree talk through a ``RecordingConnection``: the real
connection, which also appends each call (arguments, result or error), generator item, byte-stream chunk and
upload digest to the running test's recording. The recording travels with the test's report (so xdist workers'
reach the controller), and the controller writes each module's file when the session ends (see ``tapes``).
What is secret is redacted as the test ends, before its recording leaves it (see ``redaction``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from jumpstarter.client.streams import AsyncStreamBase, BlockingStreamBase
from pytest_jumpstarter import redaction, tapes

REPORT_ATTRIBUTE = "jumpstarter_recording"  # on a test's teardown report: its recording (plain data)
FILE = "file"  # in that recording, until the controller writes it: the file it goes to


class Recorder:
    """The plugin's room for recording: per-test recordings in the worker, files in the controller."""

    def __init__(self, folder: Path, controller: bool) -> None:
        self.folder = folder
        self.controller = controller
        self.current: dict | None = None  # the running test's recording
        self.attached: dict[str, Any] = {}  # fixture name -> its client, while attached
        self.received: dict[str, dict] = {}  # controller: node id -> recording
        self.secrets: set[str] = set()  # the exporters' addresses and passphrases: redacted wherever they appear
        self.declared: redaction.Declared = {}  # the running test's secret arguments (its markers)

    # Fixtures ---------------------------------------------------------------------------------

    def connection(self, real: Any) -> RecordingConnection:
        """The connection a recorded test's client tree talks through: ``real``, writing down what passes. Its
        address and passphrase are secrets from then on: redacted wherever they appear."""
        for name in ("address", "passphrase"):
            value = getattr(real, name, None)
            if isinstance(value, str):
                self.secrets.add(value)
        return RecordingConnection(real, self)

    def attach(self, fixture: str, client: Any) -> Callable[[], None]:
        """Note ``client``'s tree (one that talks through ``connection()``) in the recordings of the tests that
        use ``fixture`` (every test, for ``env()``'s) until the returned function is called."""
        self.attached[fixture] = client
        self._note(fixture, client)
        return partial(self.attached.pop, fixture, None)

    def _note(self, fixture: str, client: Any) -> None:
        if self.current is not None and fixture not in self.current["fixtures"]:
            self.current["fixtures"][fixture] = client.name or tapes.ROOT_PATH
            uuids = self.current["uuids"]  # kept across the test's fixtures: a proxy's paths are one driver
            self.current["drivers"] = tapes.merge(self.current["drivers"], tapes.describe(client, uuids))

    def begin(self, kind: str, target: str, method: str | None = None, args: tuple | None = None) -> dict:
        """A step of the running test, written down as it starts (so steps keep the order they were made in);
        the caller adds how it ended. Outside a test, a step goes nowhere."""
        entry: dict[str, Any] = {kind: f"{target}.{method}".lstrip(".") if method else target}
        if args:  # none written: none given
            entry["args"] = tapes.wire_args(args, self.current["aliases"] if self.current else {})
        if self.current is not None:
            self.current["calls"].append(entry)
        return entry

    def alias(self, uuid: str) -> str:
        """A stable name for an upload handle's uuid, for the arguments it appears in."""
        if self.current is None:
            return uuid
        aliases = self.current["aliases"]
        return aliases.setdefault(uuid, f"upload {len(aliases) + 1}")

    # Hooks ------------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.current = {"fixtures": {}, "drivers": {}, "calls": [], "aliases": {}, "uuids": {}}
        self.declared = redaction.declared(item)
        used = set(getattr(item, "fixturenames", ()))
        for fixture, client in self.attached.items():  # module- or session-scoped fixtures, attached earlier
            if fixture in used or fixture == tapes.ENV:  # which tests use env()'s client is not known
                self._note(fixture, client)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        if call.when == "teardown" and self.current is not None:
            recording, self.current = self.current, None
            if recording["fixtures"]:
                recording.pop("aliases")
                recording.pop("uuids")
                redaction.redact_steps(recording["calls"], self.secrets, self.declared)
                recording[FILE] = str(tapes.file_for(self.folder, item.path, item.nodeid))
                setattr(report, REPORT_ATTRIBUTE, recording)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        recording = getattr(report, REPORT_ATTRIBUTE, None)
        if self.controller and recording is not None:
            self.received[report.nodeid] = recording

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Each module's file: the tests recorded now replace their old recordings; the others stay. A file that
        can't be read or written costs only its own module's recordings, named in a line of its own (and the
        run's exit status)."""
        if not self.controller or not self.received:
            return
        by_file: dict[Path, dict[str, dict]] = {}
        for nodeid, recording in self.received.items():
            by_file.setdefault(Path(recording.pop(FILE)), {})[tapes.test_key(nodeid)] = recording
        problems, written = [], 0
        for path, tests in by_file.items():
            try:
                old = tapes.load(path, self.folder) if os.path.lexists(path) else {}
                tapes.save(path, {**old, **tests}, self.folder)
                written += len(tests)
            except (OSError, ValueError) as exc:
                problems.append(f"jumpstarter: {len(tests)} tests' recordings not written: {tapes.problem(path, exc)}")
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"jumpstarter: recorded {written} tests' driver calls in {len(by_file) - len(problems)} files under "
                f"{self.folder}"
            )
            for problem in problems:
                reporter.write_line(problem, red=True)
        if problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


class RecordingConnection:
    """A client connection that writes down what passes through it (see the module's docstring)."""

    def __init__(self, real: Any, recorder: Recorder) -> None:
        self._real = real
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def _begin(self, kind: str, target: str, method: str, args: tuple) -> dict | None:
        try:
            return self._recorder.begin(kind, target, method, args)
        except TypeError:  # arguments that can't travel: the call itself says so, and nothing is sent
            return None

    def call(self, uuid: str, target: str, method: str, args: tuple) -> Any:
        __tracebackhide__ = True
        entry = self._begin("call", target, method, args)
        try:
            result = self._real.call(uuid, target, method, args)
        except Exception as exc:
            _failed(entry, exc)
            raise
        if entry is not None and result is not None:  # no result written: None
            entry["result"] = tapes.plain(result)
        return result

    async def call_async(self, uuid: str, target: str, method: str, args: tuple) -> Any:
        __tracebackhide__ = True
        entry = self._begin("call", target, method, args)
        try:
            result = await self._real.call_async(uuid, target, method, args)
        except Exception as exc:
            _failed(entry, exc)
            raise
        if entry is not None and result is not None:  # no result written: None
            entry["result"] = tapes.plain(result)
        return result

    def streamingcall(self, uuid: str, target: str, method: str, args: tuple) -> Iterator[Any]:
        __tracebackhide__ = True
        entry = self._begin("generate", target, method, args) or {}
        items = entry["items"] = []
        entry["end"] = "stopped"  # until the generator ends: the test stopped reading
        try:
            for item in self._real.streamingcall(uuid, target, method, args):
                items.append(tapes.plain(item))
                yield item
        except Exception as exc:
            entry.pop("end")
            _failed(entry, exc)
            raise
        entry["end"] = "done"

    async def streamingcall_async(self, uuid: str, target: str, method: str, args: tuple) -> AsyncIterator[Any]:
        __tracebackhide__ = True
        entry = self._begin("generate", target, method, args) or {}
        items = entry["items"] = []
        entry["end"] = "stopped"
        try:
            async for item in self._real.streamingcall_async(uuid, target, method, args):
                items.append(tapes.plain(item))
                yield item
        except Exception as exc:
            entry.pop("end")
            _failed(entry, exc)
            raise
        entry["end"] = "done"

    def stream(self, uuid: str, target: str, method: str) -> RecordingStream:
        entry = self._recorder.begin("stream", target, method)
        return RecordingStream(self._real.stream(uuid, target, method), entry.setdefault("traffic", []))

    def stream_async(self, uuid: str, target: str, method: str) -> AsyncRecordingStream:
        entry = self._recorder.begin("stream", target, method)
        return AsyncRecordingStream(self._real.stream_async(uuid, target, method), entry.setdefault("traffic", []))

    @asynccontextmanager
    async def resource_async(
        self, uuid: str, target: str, source: Any, content_encoding: str | None = None
    ) -> AsyncIterator[dict]:
        """An upload: its bytes' size and digest are written down (an image is too big to keep), and the bytes the
        driver sent back (a dump), whole."""
        from jumpstarter.client.uploads import upload_source

        entry = self._recorder.begin("upload", target)
        tap = _UploadTap(upload_source(source, target))
        async with self._real.resource_async(uuid, target, tap, content_encoding) as handle:
            entry["handle"] = tapes.plain({**handle, "uuid": self._recorder.alias(handle.get("uuid", ""))})
            yield handle
        entry.update(size=tap.size, sha256=tap.digest.hexdigest())
        if tap.returned:
            entry["returned"] = tapes.data(b"".join(tap.returned))

    def reset(self) -> None:
        self._recorder.begin("reset", "exporter")
        self._real.reset()


def _failed(entry: dict | None, exc: BaseException) -> None:
    if entry is not None:
        entry["error"] = tapes.error(exc)


def _pending(traffic: list) -> None:
    """Write down that a receive was waiting when the test closed the stream or cancelled the receive: replay
    makes such a receive wait for the same (what ended it, if anything, follows)."""
    if traffic[-1:] != [tapes.PENDING]:
        traffic.append(tapes.PENDING)


class RecordingStream(BlockingStreamBase):
    """A byte stream whose traffic is written down, in order: ``send``/``receive`` chunks, ``eof`` (this side
    ended), ``end`` (the driver's side ended), the error it ended with, or ``pending`` (a receive waited when the
    stream was closed or the receive cancelled)."""

    def __init__(self, real: Any, traffic: list) -> None:
        self._real, self._traffic = real, traffic
        self._receiving = 0  # receives under way (another thread's or task's, when the stream is closed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def send(self, data: bytes) -> None:
        self._traffic.append({"send": tapes.data(bytes(data))})
        self._real.send(data)

    def send_eof(self) -> None:
        if "eof" not in self._traffic:
            self._traffic.append("eof")
        self._real.send_eof()

    def receive(self) -> bytes:
        self._receiving += 1
        try:
            data = self._real.receive()
        except anyio.EndOfStream:
            self._traffic.append("end")
            raise
        except Exception as exc:
            self._traffic.append({"error": tapes.error(exc)})
            raise
        except BaseException:  # interrupted while it waited
            _pending(self._traffic)
            raise
        finally:
            self._receiving -= 1
        self._traffic.append({"receive": tapes.data(data)})
        return data

    def close(self) -> None:
        if self._receiving:  # what comes of the receive that waits (written when it ends) comes of the close
            _pending(self._traffic)
        self._real.close()


class AsyncRecordingStream(AsyncStreamBase):
    """The async twin of RecordingStream."""

    def __init__(self, real: Any, traffic: list) -> None:
        self._real, self._traffic = real, traffic
        self._receiving = 0  # receives under way (another thread's or task's, when the stream is closed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def send(self, data: bytes) -> None:
        self._traffic.append({"send": tapes.data(bytes(data))})
        await self._real.send(data)

    async def send_eof(self) -> None:
        if "eof" not in self._traffic:
            self._traffic.append("eof")
        await self._real.send_eof()

    async def receive(self) -> bytes:
        self._receiving += 1
        try:
            data = await self._real.receive()
        except anyio.EndOfStream:
            self._traffic.append("end")
            raise
        except Exception as exc:
            self._traffic.append({"error": tapes.error(exc)})
            raise
        except BaseException:  # cancelled while it waited (a port forward's copy, when the forward ends)
            _pending(self._traffic)
            raise
        finally:
            self._receiving -= 1
        self._traffic.append({"receive": tapes.data(data)})
        return data

    async def aclose(self) -> None:
        if self._receiving:
            _pending(self._traffic)
        await self._real.aclose()


class _UploadTap:
    """An upload's source, counted and hashed as it is read; what the driver sends back is kept too."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.size = 0
        self.digest = hashlib.sha256()
        self.returned: list[bytes] = []
        if hasattr(source, "send"):  # only a source that can take a dump offers send()

            async def send(data: bytes) -> None:
                self.returned.append(bytes(data))
                await source.send(data)

            self.send = send
        for name in ("send_eof", "aclose"):
            if hasattr(source, name):
                setattr(self, name, getattr(source, name))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        from jumpstarter.client.uploads import chunks_of

        async for chunk in chunks_of(self._source):
            self.size += len(chunk)
            self.digest.update(chunk)
            yield chunk
