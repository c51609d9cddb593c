"""A long upload's progress on the terminal: one line, rewritten in place; nothing where stderr is no terminal.

An image being flashed takes minutes; a test run's output (captured, or a CI log) must not fill with progress,
so only a terminal sees it, and only once an upload has run for a while.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, TextIO

SHOW_AFTER = 1.0  # seconds: a quicker upload shows nothing
EVERY = 0.2  # seconds between two updates of the line


def upload_size(source: Any) -> int | None:
    """The bytes ``source`` will give, where that is known before reading: bytes, a path, a regular file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.stat(source).st_size
        if callable(getattr(source, "fileno", None)) and callable(getattr(source, "tell", None)):
            return os.fstat(source.fileno()).st_size - source.tell()
    except (OSError, ValueError):
        pass
    return None


def upload_label(source: Any, target: str) -> str:
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    return f"{os.path.basename(name)} to {target}" if isinstance(name, str) else f"upload to {target}"


async def with_progress(
    chunks: AsyncIterator[bytes], label: str, total: int | None, out: TextIO | None = None
) -> AsyncIterator[bytes]:
    """``chunks`` as they are, counted on a progress line when ``out`` (stderr) is a terminal."""
    out = out or sys.stderr
    if not out.isatty():
        async for chunk in chunks:
            yield chunk
        return
    started = shown = time.monotonic()
    sent = 0
    drawn = False
    async for chunk in chunks:
        sent += len(chunk)
        now = time.monotonic()
        if now - started >= SHOW_AFTER and now - shown >= EVERY:
            out.write("\r" + _line(label, sent, total, now - started))
            out.flush()
            shown, drawn = now, True
        yield chunk
    if drawn:
        out.write("\r" + _line(label, sent, total, time.monotonic() - started) + "\n")
        out.flush()


def _line(label: str, sent: int, total: int | None, seconds: float) -> str:
    rate = sent / seconds / 1e6 if seconds > 0 else 0.0
    if total:
        return f"{label}: {100 * sent / total:3.0f}% {sent / 1e6:.1f}/{total / 1e6:.1f} MB, {rate:.1f} MB/s "
    return f"{label}: {sent / 1e6:.1f} MB, {rate:.1f} MB/s "
