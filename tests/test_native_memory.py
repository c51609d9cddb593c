"""Native memory a call leaves in the exporter: none (issue 27's soak grew an exporter ~3 MiB a minute).

grpc.aio never frees a read whose awaiting task is cancelled (grpc/grpc#43360); the exporter cancelled the
reader of every paced call and lease session at its end, leaving some 100-400 B of malloc'd memory a call,
which Python's own counts (tracemalloc, gc) don't see. Measured here as glibc's bytes in use (mallinfo2) in
this process, which serves in-process: a few hundred calls must leave well under 100 B each.
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Iterator

import pytest
from jumpstarter_driver_demo import Board

from jumpstarter.driver import export
from jumpstarter.inprocess import serve

CALLS = 400
MOST_PER_CALL = 64  # bytes; a leak was 100-400 (one read's batch and the message that came for it)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _in_use() -> int | None:
    """glibc's bytes in use (mallinfo2().uordblks), or None where there is no mallinfo2."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _Mallinfo2
    gc.collect()
    return int(mallinfo2().uordblks)


class _Paced(Board):
    @export(lookahead=2)
    def lines(self, n: int) -> Iterator[str]:
        for i in range(n):
            yield f"line {i}"


def test_paced_calls_leave_no_native_memory_in_the_exporter():
    if _in_use() is None or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
        pytest.skip("glibc's mallinfo2 measures native memory here; this libc has none")
    with serve(_Paced(name="paced", baudrate=9600, children={})) as client:

        def calls(n: int) -> None:
            for _ in range(n):
                assert sum(1 for _ in client.streamingcall("lines", 12)) == 12

        calls(200)  # warm-up: gRPC's and the allocator's caches settle
        before = _in_use()
        calls(CALLS)
        after = _in_use()
    assert before is not None and after is not None
    per_call = (after - before) / CALLS
    assert per_call < MOST_PER_CALL, f"each paced call left {per_call:.0f} B of native memory"
