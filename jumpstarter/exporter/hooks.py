"""Running one of an exporter's hook scripts (its config's ``hooks:``) as upstream's exporter runs it.

The script runs in a process group of its own, with ``JUMPSTARTER_HOST`` pointing at this exporter's private socket
for hooks (so ``j power on`` works; our client sends the hook's lease id, from ``JUMPSTARTER_LEASE``; upstream's,
which sends none, is let in there while the hook runs), ``LEASE_NAME`` and ``CLIENT_NAME``. Its output (stdout and
stderr) goes to the exporter's log, a bounded number of lines, and its last 64 KiB to whoever waited for it. One
that outlives its timeout is killed with its children (the whole group: SIGTERM, then SIGKILL); so is one running
when the exporter stops, but for the afterLease that tidies the board then. When hooks run is
jumpstarter.exporter.holders' business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jumpstarter.exporter.loglimit import LogQuota
from jumpstarter.utils.env import JMP_GRPC_PASSPHRASE, JUMPSTARTER_HOST
from jumpstarter.v1 import lease_pb2

if TYPE_CHECKING:
    from jumpstarter.config.hooks import HookSpec

log = logging.getLogger("jumpstarter.exporter")

LEASE_ENV = "JUMPSTARTER_LEASE"  # the lease id a hook's calls carry (read by jumpstarter.utils.env.env())
OUTPUT_KEEP = 64 * 1024  # bytes of a run's output kept for its waiter: the last ones
LOG_LINES = 200  # lines of one run's output logged; the rest are counted in one line
LINE_CHARS = 1000  # a logged line is cut to this
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL to a hook's process group
DRAIN = 1.0  # seconds to read what a finished hook left in its pipe (a child it left running may hold it open)


@dataclass(frozen=True)
class Where:
    """How a hook reaches the exporter it runs for: its private socket (jumpstarter.exporter.hooksocket)."""

    address: str
    passphrase: str | None = None


def output_log(hook: str) -> logging.Logger:
    """Where the output of ``hook`` (beforeLease, afterLease) is logged."""
    return logging.getLogger(f"jumpstarter.drivers.{hook}")


def command(spec: HookSpec) -> list[str]:
    """The argv of ``spec``: a script file run by its interpreter (by extension: .py this Python, else /bin/sh),
    or inline text given to ``exec`` (default /bin/sh) with -c, as upstream's exporter does."""
    script = spec.script.strip()
    if "\n" not in script and os.path.isfile(script):
        return [spec.exec or (sys.executable if script.endswith(".py") else "/bin/sh"), script]
    return [spec.exec or "/bin/sh", "-c", spec.script]


def environment(where: Where, lease_id: str, lease_name: str, client_name: str) -> dict[str, str]:
    """The hook's environment: the exporter's, this Python's scripts (``j``) first on PATH, and the names above."""
    env = dict(os.environ)
    env.pop("PS1", None)
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(filter(None, (bin_dir, env.get("PATH", ""))))
    env.update(
        {
            JUMPSTARTER_HOST: where.address,
            LEASE_ENV: lease_id,
            "LEASE_NAME": lease_name,
            "CLIENT_NAME": client_name,
            "JMP_DRIVERS_ALLOW": "UNSAFE",
            "TERM": "dumb",
            "DEBIAN_FRONTEND": "noninteractive",
        }
    )
    if where.passphrase:  # not needed on the hooks' socket; sent by a client of ours all the same
        env[JMP_GRPC_PASSPHRASE] = where.passphrase
    return env


class _Output:
    """A run's output: its lines logged within a budget, its last OUTPUT_KEEP bytes kept."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kept = bytearray()
        self.dropped = 0
        # Under jumpstarter.drivers: the exporter's log, and clients' LogStream (upstream's jmp shell --exporter-logs).
        self.quota = LogQuota(output_log(name), f"lines of the {name} hook's output", limit=LOG_LINES, period=3600.0)
        self._partial = b""

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.kept += chunk
            if len(self.kept) > OUTPUT_KEEP:
                self.dropped += len(self.kept) - OUTPUT_KEEP
                del self.kept[: len(self.kept) - OUTPUT_KEEP]
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()[-LINE_CHARS:]
            for line in lines:
                self._log(line)

    def _log(self, line: bytes) -> None:
        self.quota.info("%s hook: %s", self.name, line[:LINE_CHARS].decode(errors="replace").rstrip("\r"))

    def close(self) -> str:
        if self._partial:
            self._log(self._partial)
        self.quota.close()
        text = self.kept.decode(errors="replace")
        return f"[{self.dropped} bytes of output left out]\n{text}" if self.dropped else text


async def run_hook(spec: HookSpec, env: dict[str, str], holder: str) -> lease_pb2.HookRun:
    """Run ``spec`` to its end, or to its timeout (then kill its group); cancelled, kill its group and re-raise."""
    started = time.time()
    output = _Output(spec.name)
    log.info("%s hook runs, for %s", spec.name, holder)
    try:
        process = await asyncio.create_subprocess_exec(
            *command(spec),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a group of its own: killed with its children
        )
    except OSError as exc:
        failure = f"can't start {command(spec)[0]}: {exc.strerror or exc}"
        log.warning("%s hook failed: %s", spec.name, failure)
        return _run(spec, holder, started, failure, output.close())
    assert process.stdout is not None
    reader = asyncio.ensure_future(output.read(process.stdout))
    try:
        try:
            async with asyncio.timeout(spec.timeout):
                code = await process.wait()
            failure = _failure(code)
        except TimeoutError:
            failure = f"timed out after {spec.timeout:g} s: killed, with its children"
            await _kill_group(process)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), DRAIN)
    except asyncio.CancelledError:
        log.warning("%s hook killed, with its children: the exporter stops", spec.name)
        await _kill_group(process)
        raise
    finally:
        reader.cancel()
    text = output.close()
    took = time.time() - started
    if failure:
        log.warning("%s hook failed after %.1f s (onFailure: %s): %s", spec.name, took, spec.on_failure, failure)
    else:
        log.info("%s hook done after %.1f s", spec.name, took)
    return _run(spec, holder, started, failure, text)


def _failure(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"signal {-code}"
    return f"exit status {code}" if code else ""


def _run(spec: HookSpec, holder: str, started: float, failure: str, output: str) -> lease_pb2.HookRun:
    return lease_pb2.HookRun(
        hook=spec.name,
        holder=holder,
        started=started,
        ended=time.time(),
        failure=failure,
        on_failure=spec.on_failure,
        output=output,
    )


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the hook's process group, SIGKILL to what is left of it after KILL_GRACE; reap the hook."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(process.wait()), KILL_GRACE)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # children that ignored SIGTERM, or outlived their parent
    await asyncio.shield(process.wait())


def describe(run: lease_pb2.HookRun) -> str:
    """One line: which hook, for whom, how it ended."""
    how = f"failed: {run.failure} (onFailure: {run.on_failure})" if run.failure else "succeeded"
    return f"{run.hook} hook {how} after {run.ended - run.started:.1f} s"
