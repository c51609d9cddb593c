"""Files written whole or not at all, and read, without going through a link someone else planted.

Recordings are committed to git and timelines land in shared folders: a symlink there (in a checkout, a pull
request, a world-writable folder) must not make us write or read a file somewhere else, and a write that fails
half way (a full disk) must leave the previous file whole. So a file is written to a fresh temporary file in the
same folder (``O_EXCL | O_NOFOLLOW``: never an existing file or link), then renamed over the target (a rename
replaces a link at the target's name, it doesn't follow it). With ``inside``, every folder below ``inside`` on
the way to the file is entered without following links: a symlinked folder is refused, not followed.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class RefusedFile(OSError):
    """A path that leads through a link, out of its folder, or to something that isn't a regular file."""


def write_atomic(path: Path, data: bytes, inside: Path | None = None) -> None:
    """Write ``data`` to ``path``, whole or not at all (see the module's docstring); folders are made as needed."""
    folder = _open_folder(path.parent, inside, create=True)
    try:
        temporary, out = _temporary(folder, path.name)
        try:
            with os.fdopen(out, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            raise
    finally:
        os.close(folder)


def read_regular(path: Path, inside: Path | None = None, limit: int | None = None) -> bytes:
    """The bytes of ``path``, a regular file reached with no link (below ``inside``, no folder either), of at
    most ``limit`` bytes. A FIFO, device or link is refused without being opened for reading."""
    folder = _open_folder(path.parent, inside, create=False)
    try:
        descriptor = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RefusedFile(f"{path} is a symlink: refused (only regular files are read)") from None
        raise
    finally:
        os.close(folder)
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile(f"{path} is not a regular file: refused")
        if limit is not None and info.st_size > limit:
            raise RefusedFile(f"{path} is {info.st_size} bytes, over the limit of {limit}: refused")
        data = file.read() if limit is None else file.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise RefusedFile(f"{path} is over the limit of {limit} bytes: refused")
    return data


def _open_folder(path: Path, inside: Path | None, create: bool) -> int:
    """A descriptor of folder ``path``; below ``inside``, each step entered without following a link."""
    if inside is None:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return os.open(path, _FOLDER)
    try:
        parts = path.relative_to(inside).parts
    except ValueError:
        raise RefusedFile(f"{path} is not inside {inside}: refused") from None
    if create:
        inside.mkdir(parents=True, exist_ok=True)
    folder = os.open(inside, _FOLDER)
    where = inside
    try:
        for part in parts:
            where = where / part
            if part in (".", ".."):
                raise RefusedFile(f"{path}: {part!r} leads out of {inside}: refused")
            if create:
                with suppress(FileExistsError):
                    os.mkdir(part, dir_fd=folder)
            try:
                child = os.open(part, _FOLDER | os.O_NOFOLLOW, dir_fd=folder)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise RefusedFile(
                        f"{where} is a symlink or not a folder: refused (links are not followed)"
                    ) from None
                raise
            os.close(folder)
            folder = child
    except BaseException:
        os.close(folder)
        raise
    return folder


def _temporary(folder: int, name: str) -> tuple[str, int]:
    """A fresh file beside ``name`` (made by us now: never an existing file or link), and its descriptor."""
    while True:
        temporary = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return temporary, os.open(temporary, flags, 0o666, dir_fd=folder)
        except FileExistsError:
            continue
