"""``jumpstarter run`` in a child process: started, awaited until it serves, followed, stopped.

Used by the pytest plugin (a driver that crashes or hangs must not take the test
run down with it) and by the tests. The child's output is read continuously, so
it never blocks on a full pipe, and kept for reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Self

READY = "jumpstarter: serving"  # the line `jumpstarter run` prints once clients can connect


class ExporterStartError(RuntimeError):
    """The exporter exited or stayed silent instead of serving; the message carries its output."""


class Standby:
    """A Python started ahead of time that imports the exporter and waits (``jumpstarter.exporter.standby``):
    an ExporterProcess given it runs there, saving most of its start-up, if it would have started the same
    Python in the same environment and folder. One not used is ended by ``discard()``: it has read no config and
    made no driver."""

    def __init__(self, python: str | Path = sys.executable) -> None:
        self.python, self.env, self.cwd = str(python), dict(os.environ), os.getcwd()
        self.process = subprocess.Popen(
            [self.python, "-m", "jumpstarter.exporter.standby"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
            text=True,
            env={**self.env, "PYTHONUNBUFFERED": "1"},
        )

    def fits(self, python: str | Path, cwd: str | Path | None) -> bool:
        """Whether ``python`` started now in ``cwd`` would be this one: same interpreter, environment, folder."""
        here = os.path.abspath(cwd) if cwd is not None else os.getcwd()
        return self.python == str(python) and self.env == dict(os.environ) and self.cwd == here and self.alive

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Tell it to run ``jumpstarter`` with ``argv``, its environment extended with ``env``; its process."""
        assert self.process.stdin is not None  # stdin=PIPE
        try:
            self.process.stdin.write(json.dumps({"argv": argv, "env": env}) + "\n")
            self.process.stdin.flush()
        except OSError:
            pass  # it has died: its output says why, as a fresh process's would
        return self.process

    def discard(self) -> None:
        """End it, unused: it has done nothing but import."""
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class ExporterProcess:
    """A running ``jumpstarter run CONFIG``; ``address`` is where it serves."""

    def __init__(
        self,
        config: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        python: str | Path = sys.executable,
        standby: Standby | None = None,
    ) -> None:
        """``standby``: a Python started ahead, to run in if it fits (else it is discarded)."""
        self.config = str(config)
        self.lines: list[str] = []
        self.address = ""
        self._ready = threading.Event()
        # Its standard input is a pipe this process holds and never writes (but a standby's one line): when this
        # process ends, however it ends (SIGKILL included), the pipe closes and the exporter stops, closing its
        # drivers (--exit-with-stdin).
        argv = ["run", self.config, "--exit-with-stdin", *args]
        if standby is not None and standby.fits(python, cwd):
            self.process = standby.run(argv, env or {})
        else:
            if standby is not None:
                standby.discard()
            self.process = subprocess.Popen(
                [str(python), "-m", "jumpstarter", *argv],
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
        for line in self.process.stdout:
            self.lines.append(line)
            if not self._ready.is_set() and line.startswith(READY):
                self.address = line.rsplit(" at ", 1)[1].strip()
                self._ready.set()
        self.process.stdout.close()
        self._ready.set()  # ended: wake wait_ready

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

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the exporter has ended, else None."""
        return self.process.poll()

    def output(self, since: int = 0) -> str:
        """What the exporter printed, from line ``since`` on."""
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
            self.process.stdin.close()

    def __enter__(self) -> ExporterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
