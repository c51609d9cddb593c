"""A blocking byte stream over an async one, shaped as upstream's ``BlockingStream(stream=..., portal=...)``.

Our client has its own ``BlockingStream`` (jumpstarter.client.streams), but that one owns a gRPC call and is
built from it (``BlockingStream(open_call, metadata, on_error)``). Code written for upstream builds this one
around any anyio byte stream and a portal to the event loop that stream lives on, so it can't be the same class.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from anyio import EndOfStream
from anyio.abc import AnyByteStream
from anyio.from_thread import BlockingPortal


@dataclass(kw_only=True)
class BlockingStream:
    """``stream``'s methods called from a thread outside its event loop, through ``portal``."""

    stream: AnyByteStream
    portal: BlockingPortal

    def send(self, data: bytes) -> None:
        self.portal.call(self.stream.send, data)

    def receive(self) -> bytes:
        """The next chunk; raises ``anyio.EndOfStream`` once the other side has ended."""
        return self.portal.call(self.stream.receive)

    def send_eof(self) -> None:
        """Tell the other side no more data comes from this one."""
        self.portal.call(self.stream.send_eof)

    def __iter__(self) -> Iterator[bytes]:
        """The chunks until the other side ends, as our client's BlockingStream yields them."""
        while True:
            try:
                yield self.receive()
            except EndOfStream:
                return
