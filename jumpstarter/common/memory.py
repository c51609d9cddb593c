"""glibc's allocator, tuned for the megabyte buffers that large values and byte streams pass through.

A 1 MiB value makes about a dozen buffers of its size on its way (protobuf, gRPC's slices, Python's str
and bytes, on each side). With glibc's defaults each is freed back to the kernel at once (the heap is
trimmed down to a 128 KiB pad) and the next is page-faulted and zeroed anew, in every thread's arena:
profiled, that churn, not the copies or the UTF-8 checks, made a 1 MiB string echo cost four times the
bare gRPC echo of the same bytes. Keeping a pad of freed heap (and buffers up to 32 MiB on the heap, not
in mmaps of their own) lets the next buffer reuse pages already mapped: a process that has handled large
values keeps up to ``TOP_PAD`` more resident per arena.

Done once per process, by the exporter and the client; not where the allocator isn't glibc's, nor when
the process's environment tunes it already (``MALLOC_TOP_PAD_``) or ``JUMPSTARTER_MALLOC=default``.
"""

from __future__ import annotations

import ctypes
import os
import threading

TOP_PAD = 64 * 1024 * 1024
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3

_lock = threading.Lock()
_tuned: bool | None = None


def tune_allocator() -> bool:
    """Tune glibc's malloc for large buffers (see the module's docstring); whether it is tuned."""
    global _tuned
    with _lock:
        if _tuned is None:
            _tuned = _tune()
        return _tuned


def _tune() -> bool:
    if os.environ.get("JUMPSTARTER_MALLOC") == "default" or "MALLOC_TOP_PAD_" in os.environ:
        return False
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
    except (ValueError, OSError, AttributeError):  # not a GNU system
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_TOP_PAD, TOP_PAD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
