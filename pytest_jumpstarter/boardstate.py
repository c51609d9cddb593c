"""Which boards of a run are checked, being checked, or out: one small JSON file shared by every process of the run.

Under pytest-xdist every worker leases boards on its own, yet "has this board had its health check in this run" and
"is this board out" are the run's, not a worker's: the controlling process makes a folder for the run and tells the
workers where it is (as it tells them the exporters' addresses); each change is a read-modify-write of
``boards.json`` under an exclusive ``flock`` of ``boards.lock``, so two workers can't both start checking a board,
and a board taken out is out for all. A check whose process died (a crashed worker) counts as never started.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

Begun = Literal["ok", "mine", "busy", "out"]  # what begin() found: checked, now ours to check, another's, out
FOLDER_KEY = "jumpstarter_boardstate"  # of xdist's workerinput: the run's folder


class BoardState:
    """The run's shared record of its boards' health: ``{name: {"state": "checking"|"ok"|"out", "pid", "why"}}``."""

    def __init__(self, folder: Path | None = None) -> None:
        self.owned = folder is None  # the controlling process made the folder, and removes it
        self.folder = Path(tempfile.mkdtemp(prefix="jumpstarter-run-")) if folder is None else folder
        self.path = self.folder / "boards.json"
        self.pid = os.getpid()

    @contextmanager
    def _locked(self) -> Iterator[dict[str, dict]]:
        with open(self.folder / "boards.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                states = json.loads(self.path.read_text()) if self.path.exists() else {}
            except (OSError, ValueError):
                states = {}
            before = json.dumps(states, sort_keys=True)
            yield states
            if json.dumps(states, sort_keys=True) != before:
                temporary = self.path.with_suffix(f".{self.pid}")
                temporary.write_text(json.dumps(states))
                os.replace(temporary, self.path)

    def begin(self, name: str) -> Begun:
        """Before a real test on ``name``: "ok" (checked), "mine" (unchecked: this process checks it now), "busy"
        (another process is checking it) or "out"."""
        with self._locked() as states:
            state = states.get(name)
            if state is not None and state["state"] in ("ok", "out"):
                return state["state"]
            if state is not None and state["pid"] != self.pid and _alive(state["pid"]):
                return "busy"
            states[name] = {"state": "checking", "pid": self.pid, "why": ""}
            return "mine"

    def finish(self, name: str, why: str | None) -> None:
        """The check of ``name`` ended: ``why`` it is out, or None (healthy)."""
        with self._locked() as states:
            states[name] = {"state": "out" if why else "ok", "pid": self.pid, "why": why or ""}

    def suspect(self, name: str) -> None:
        """A test failed on ``name``: check it again before its next test (unless it is out already)."""
        with self._locked() as states:
            if states.get(name, {}).get("state") == "ok":
                del states[name]

    def busy(self, name: str) -> str | None:
        """Why a claim should pass ``name`` by for now: another live process is checking it."""
        with self._locked() as states:
            state = states.get(name)
        if state and state["state"] == "checking" and state["pid"] != self.pid and _alive(state["pid"]):
            return "is having its health checked"
        return None

    def out(self) -> dict[str, str]:
        """The boards taken out of the run, and why."""
        if not self.path.exists():
            return {}
        with self._locked() as states:
            return {name: s["why"] for name, s in states.items() if s["state"] == "out"}

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
