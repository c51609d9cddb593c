"""``jumpstarter run`` in a child process: started, awaited until it serves, followed, stopped.

Used by the pytest plugin (a driver that crashes or hangs must not take the test
run down with it) and by the tests. The child's output is read continuously, so
it never blocks on a full pipe, and kept for reports.
"""

from __future__ import annotations

import codecs
import os
import select
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Self

READY = "jumpstarter: serving"  # the line `jumpstarter run` prints once clients can connect


class ExporterStartError(RuntimeError):
    """The exporter exited or stayed silent instead of serving; the message carries its output."""


class ExporterProcess:
    """A running ``jumpstarter run CONFIG``; ``address`` is where it serves."""

    def __init__(
        self,
        config: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        python: str | Path = sys.executable,
    ) -> None:
        self.config = str(config)
        self.lines: list[str] = []
        self.address = ""
        self._ready = threading.Event()
        self._reading = threading.Lock()  # held while a chunk read from the pipe isn't in ``lines`` yet
        self._ended = False
        # Its standard input is a pipe this process holds and never writes: when this process ends, however it
        # ends (SIGKILL included), the pipe closes and the exporter stops, closing its drivers (--exit-with-stdin).
        self.process = subprocess.Popen(
            [str(python), "-m", "jumpstarter", "run", self.config, "--exit-with-stdin", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, name=f"exporter output {self.config}", daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls,
        config: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 30,
        cwd: str | Path | None = None,
        python: str | Path = sys.executable,
    ) -> Self:
        """Start the exporter and return once it serves; ExporterStartError with its output if it doesn't.
        ``python``: the interpreter (of a virtualenv with the drivers) that runs ``jumpstarter run``."""
        exporter = cls(config, *args, env=env, cwd=cwd, python=python)
        exporter.wait_ready(timeout)
        return exporter

    def _read(self) -> None:
        assert self.process.stdout is not None  # stdout=PIPE
        pipe = self.process.stdout.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        partial = ""
        while True:
            select.select([pipe], [], [])  # wait for output without holding the lock: see output()
            with self._reading:
                chunk = os.read(pipe, 65536)
                text = partial + decoder.decode(chunk, final=not chunk)
                *whole, partial = text.split("\n")
                for line in [f"{line}\n" for line in whole] + ([partial] if not chunk and partial else []):
                    self._line(line)
                if not chunk:
                    self._ended = True
                    break
        self.process.stdout.close()
        self._ready.set()  # ended: wake wait_ready

    def _line(self, line: str) -> None:
        self.lines.append(line)
        if not self._ready.is_set() and line.startswith(READY):
            self.address = line.rsplit(" at ", 1)[1].strip()
            self._ready.set()

    def _caught_up(self, most: float) -> None:
        """Wait (up to ``most`` s) until what the exporter has written so far is in ``lines``: a line it logged
        before answering a call is in the pipe when the answer arrives, but the reader may not have read it yet."""
        deadline = time.monotonic() + most
        while time.monotonic() < deadline:
            with self._reading:
                if self._ended or not select.select([self.process.stdout.fileno()], [], [], 0)[0]:  # type: ignore[union-attr]
                    return
            time.sleep(0.005)

    def wait_ready(self, timeout: float) -> None:
        if self._ready.wait(timeout) and self.address:
            return
        if self._ready.is_set():  # its output ended: it is exiting, let it finish so its code is known
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.kill()
            why = f"did not serve within {timeout:g} s"
        else:
            why = f"exited with code {self.process.returncode}"
        self._reader.join(5)
        self._close_stdin()
        raise ExporterStartError(f"exporter {self.config} {why}:\n{self.output().rstrip()}")

    def release(self) -> None:
        """Let an exporter started with ``--hold`` make its drivers and serve."""
        assert self.process.stdin is not None  # stdin=PIPE
        try:
            self.process.stdin.write("go\n")
            self.process.stdin.flush()
        except OSError:
            pass  # it has exited already: wait_ready says how

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the exporter has ended, else None."""
        return self.process.poll()

    def output(self, since: int = 0) -> str:
        """What the exporter printed, from line ``since`` on (all it had written by now)."""
        self._caught_up(1.0)
        return "".join(self.lines[since:])

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM (drivers' close() runs), then SIGKILL after ``timeout``; the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(5)
        self._close_stdin()
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.process.stdin is not None:
            with suppress(OSError):  # a "go" release() left unsent: the exporter had ended already
                self.process.stdin.close()

    def __enter__(self) -> ExporterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
