"""Folders of ours in shared places (the temp directory): made private, and checked before use.

Another local user who makes ``/tmp/jumpstarter-<uid>`` first could put a listener of their own where our
exporter's socket goes, or a symlink where a lock file goes; one who may write the folder above ours (a TMPDIR
writable by all, without the sticky bit) could move ours aside and put theirs in its place. A folder we use must
be ours and writable only by us, in folders that only root or we may rename things in; one that isn't is refused,
saying why and what to do. A lock file that every user opens (``shared_lock_file``) lies in the temp directory,
sticky as /tmp is, and is written only if it is a plain file of one link, opened without following a symlink.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO

_WHAT_TO_DO = "set XDG_RUNTIME_DIR (or TMPDIR) to a folder of your own"


def runtime_folder() -> Path:
    """This user's private folder for sockets (``$XDG_RUNTIME_DIR/jumpstarter-UID``, else in the temp directory);
    PermissionError as ``private_folder``."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return private_folder(Path(base) / f"jumpstarter-{os.getuid()}")


def private_folder(path: Path) -> Path:
    """``path``, made if missing (mode 0700); PermissionError if it isn't this user's own, or others may write it
    or the folders above it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # a file or a dangling symlink: named below
        pass
    except NotADirectoryError as exc:
        raise PermissionError(f"{path}: a file stands where a folder above it should be ({exc.filename})") from None
    safe_parents(path)
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


def safe_parents(ours: Path) -> None:
    """PermissionError unless only root or this user may rename what each folder above ``ours`` holds: each
    belongs to one of them, and others may not write it, or it is sticky (as /tmp is)."""
    for folder in ours.parents:
        _safe_above(folder, ours)


def _safe_above(folder: Path, ours: Path) -> None:
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


def shared_lock_file(name: str) -> tuple[IO[str], Path]:
    """The lock file ``name`` in the temp directory, and its path. Every local user opens the same file, so flock
    on it keeps apart the processes of all users (an exporter's lease where it keeps none). Open for reading and
    writing (the holder writes who it is), or for reading only where another user's file refuses us.

    PermissionError naming the problem where the temp directory isn't safe (see ``safe_parents``), or the name holds
    anything but a plain file of one link: a symlink or a hard link to a file of ours, put there by another user,
    is never written."""
    path = Path(tempfile.gettempdir()) / name
    safe_parents(path)
    descriptor, writable = _open_shared(path)
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(descriptor)
        what = f"has {info.st_nlink} hard links" if stat.S_ISREG(info.st_mode) else "is not a plain file"
        raise _not_a_lock_file(path, what)
    if info.st_uid == os.getuid():
        os.fchmod(descriptor, 0o666)  # whatever the umask: every user's processes lock it and write who holds it
    return open(descriptor, "a+" if writable else "r"), path  # noqa: SIM115 - the caller holds it open


def _open_shared(path: Path) -> tuple[int, bool]:
    """A descriptor of ``path``, made if missing, without following a symlink; and whether it may be written."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK  # (a FIFO put there doesn't block the open: it is refused after)
    while True:
        try:  # no O_CREAT first: fs.protected_regular refuses it for another user's file in a sticky folder
            return os.open(path, os.O_RDWR | flags), True
        except FileNotFoundError:
            pass
        except PermissionError:  # another user's, which we may not write: lock it all the same
            return os.open(path, os.O_RDONLY | flags), False
        except OSError as exc:
            what = {errno.ELOOP: "is a symlink", errno.EISDIR: "is a folder"}.get(exc.errno or 0)
            if what:
                raise _not_a_lock_file(path, what) from None
            raise
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | flags, 0o666), True
        except FileExistsError:
            continue  # made meanwhile by another process: open that one


def _not_a_lock_file(path: Path, what: str) -> PermissionError:
    return PermissionError(f"{path} {what}: it is no lock file of ours; remove it (another user's?)")
