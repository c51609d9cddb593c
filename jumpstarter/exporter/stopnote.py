"""Why an exporter stopped by itself (a hook whose onFailure is exit failed), written where whoever started it reads it.

The pytest plugin starts YAML exporters with ``JUMPSTARTER_STOP_NOTE`` naming a file in the exporter's private
folder; its xdist workers, which didn't see the hook fail, find the exporter gone and read the note, so that every
test that fails on that board names the hook instead of saying only that nothing listens any more.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jumpstarter.common.safefiles import read_regular, write_atomic

STOP_NOTE_ENV = "JUMPSTARTER_STOP_NOTE"


def write_stop_note(run: Any) -> None:
    """Note that ``run`` (a HookRun whose onFailure is exit) failed, in $JUMPSTARTER_STOP_NOTE if it is set."""
    path = os.environ.get(STOP_NOTE_ENV)
    if not path or not Path(path).parent.is_dir():  # unset, or its folder removed: nobody reads it
        return
    note = json.dumps({"hook": run.hook, "failure": run.failure})
    try:
        write_atomic(Path(path), note.encode(), inside=Path(path).parent)  # whole or absent for its reader
    except OSError as exc:  # the folder was removed: nobody reads it
        print(f"jumpstarter: can't write {STOP_NOTE_ENV} {path}: {exc.strerror or exc}", flush=True)


def read_stop_note(path: str, exporter: str) -> str | None:
    """Why ``exporter`` stopped, from the note at ``path``; None if it wrote none (or ``path`` is "")."""
    if not path:
        return None
    try:
        note = json.loads(read_regular(Path(path), limit=64 * 1024))
        hook, failure = str(note["hook"]), str(note["failure"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stopped_by(exporter, hook, failure)


def stopped_by(exporter: str, hook: str, failure: str) -> str:
    """What a test on ``exporter`` fails with once its ``hook`` failed with onFailure exit."""
    return f"exporter {exporter} stopped: its {hook} hook failed ({failure}), and its onFailure is exit"
