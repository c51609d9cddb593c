"""A task reading a call's requests is let end with its call, never cancelled in the middle of a read.

grpc.aio leaks a read whose awaiting task is cancelled (the read's batch, and the message that arrives for
it afterwards, are never freed: grpc/grpc#43360). A handler that cancelled its reader at the call's end
leaked some 100 B to 1 KiB of native memory a call: six clients making paced calls grew an exporter by
~0.8 MiB a minute, for good. Left alone, the reader's pending read completes as the call ends, and the task
with it.
"""

from __future__ import annotations

import asyncio

_ending: set[asyncio.Future] = set()  # held here until they end: the loop keeps only weak references to tasks


def let_end(reader: asyncio.Future) -> None:
    """``reader`` reads a call that is ending: keep it until it ends by itself (see the module's docstring)."""
    if not reader.done():
        _ending.add(reader)
        reader.add_done_callback(_ending.discard)
