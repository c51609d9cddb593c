"""Folders of ours in shared places (the temp directory): made private, and checked before use.

Another local user who makes ``/tmp/jumpstarter-<uid>`` first could put a listener of their own where our
exporter's socket goes, or a symlink where a lock file goes; one who may write the folder above ours (a TMPDIR
writable by all, without the sticky bit) could move ours aside and put theirs in its place. A folder we use must
be ours and writable only by us, in folders that only root or we may rename things in; one that isn't is refused,
saying why and what to do.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_WHAT_TO_DO = "set XDG_RUNTIME_DIR (or TMPDIR) to a folder of your own"


def private_folder(path: Path) -> Path:
    """``path``, made if missing (mode 0700); PermissionError if it isn't this user's own, or others may write it
    or the folders above it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # a file or a dangling symlink: named below
        pass
    except NotADirectoryError as exc:
        raise PermissionError(f"{path}: a file stands where a folder above it should be ({exc.filename})") from None
    for above in path.parents:
        safe_above(above, path)
    info = os.lstat(path)
    problem = None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problem = "is not a folder (a file, or a symlink)"
    elif info.st_uid != os.getuid():
        problem = f"belongs to another user (uid {info.st_uid})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"may be written by others (mode {stat.S_IMODE(info.st_mode):04o})"
    if problem:
        raise PermissionError(
            f"{path} {problem}: it can't be trusted with sockets or lock files; remove it, or {_WHAT_TO_DO}"
        )
    return path


def safe_above(folder: Path, ours: Path) -> None:
    """PermissionError unless only root or this user may rename what ``folder`` holds: it belongs to one of them,
    and others may not write it, or it is sticky (as /tmp is)."""
    link = os.lstat(folder)
    info = os.stat(folder) if stat.S_ISLNK(link.st_mode) else link  # a symlink's owner may repoint it: both count
    stranger = next((i.st_uid for i in (link, info) if i.st_uid not in (0, os.getuid())), None)
    others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX
    if stranger is None and not others_write:
        return
    why = (
        f"belongs to another user (uid {stranger})"
        if stranger is not None
        else f"may be written by others (mode {info.st_mode & 0o7777:04o}, not sticky)"
    )
    raise PermissionError(
        f"{folder}, the folder above {ours}, {why}: another user could move {ours.name} aside and put theirs in its "
        f"place; {_WHAT_TO_DO}, or make {folder} sticky (chmod +t) or private (chmod go-w)"
    )
