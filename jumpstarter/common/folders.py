"""Folders of ours in shared places (the temp directory): made private, and checked before use.

Another local user who makes ``/tmp/jumpstarter-<uid>`` first could put a listener of their own where our
exporter's socket goes, or a symlink where a lock file goes. A folder we use must be ours and writable only
by us; one that isn't is refused, saying why and what to do.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def private_folder(path: Path) -> Path:
    """``path``, made if missing (mode 0700); PermissionError if it isn't this user's own, or others may write."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    problem = None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problem = "is not a folder (a symlink?)"
    elif info.st_uid != os.getuid():
        problem = f"belongs to another user (uid {info.st_uid})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"may be written by others (mode {stat.S_IMODE(info.st_mode):04o})"
    if problem:
        raise PermissionError(
            f"{path} {problem}: it can't be trusted with sockets or lock files; remove it, "
            "or set XDG_RUNTIME_DIR (or TMPDIR) to a folder of your own"
        )
    return path
