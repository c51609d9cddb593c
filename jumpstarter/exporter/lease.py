"""Exclusive leases kept by the exporter itself, so that no two holders drive one board at once.

One holder at a time; a holder keeps its lease for as long as its ``Lease``
call stays open, so a holder that dies (or whose connection is cut) loses it
as soon as gRPC notices. While a lease is held, calls that touch the hardware
must carry its id; calls of everyone else are refused with who holds it.
Without any lease held, calls need none: upstream clients work as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from uuid import uuid4

import grpc

from jumpstarter.common.wire import MAX_HOLDER, when
from jumpstarter.exporter.context import ServicerContext
from jumpstarter.v1 import lease_pb2, lease_pb2_grpc

# The RPCs that stay open to everyone while the exporter is leased: they read, or they are the leasing itself.
# Every other RPC, a new one included, is refused without the lease (deny by default).
OPEN = frozenset(
    {
        "/jumpstarter.v1.ExporterService/GetReport",
        "/jumpstarter.v1.ExporterService/GetStatus",
        "/jumpstarter.v1.ExporterService/LogStream",
        "/jumpstarter.v1.ExporterService/EndSession",
        "/jumpstarter.hil.v1.LeaseService/Lease",
        "/jumpstarter.hil.v1.LeaseService/Release",
        "/jumpstarter.hil.v1.LeaseService/LeaseSession",
        "/jumpstarter.hil.v1.LeaseService/GetLeases",
    }
)


def guarded(method: str) -> bool:
    """Whether RPC ``method`` (``/package.Service/Method``) needs the lease while one is held."""
    return method not in OPEN


log = logging.getLogger("jumpstarter.exporter")


class Leases(lease_pb2_grpc.LeaseServiceServicer):
    """The lease of one exporter, and a record of past ones (the newest ``keep``)."""

    def __init__(self, keep: int = 10_000) -> None:
        self.current: lease_pb2.LeaseRecord | None = None
        self.records: deque[lease_pb2.LeaseRecord] = deque(maxlen=keep)
        self._released = asyncio.Event()  # set to end the current Lease call (each lease makes its own)

    def refusal(self, lease_id: str) -> str | None:
        """Why a guarded call carrying ``lease_id`` ("" for none) may not run now, or None."""
        current = self.current
        if current is None:
            return f"lease {lease_id} has ended; take a new one" if lease_id else None
        if lease_id == current.lease_id:
            return None
        return f"exporter is leased by {current.holder} since {when(current.granted)}"

    async def Lease(
        self, request: lease_pb2.LeaseRequest, context: ServicerContext
    ) -> AsyncIterator[lease_pb2.LeaseResponse]:
        record, answer = await self._take(request, context)
        yield answer
        if record is None:
            return
        try:
            await self._released.wait()
        finally:
            self._end(record, "holder vanished")

    async def LeaseSession(
        self, request_iterator: AsyncIterator[lease_pb2.LeaseSessionRequest], context: ServicerContext
    ) -> AsyncIterator[lease_pb2.LeaseResponse]:
        held: lease_pb2.LeaseRecord | None = None
        try:
            async for request in request_iterator:
                if request.HasField("take"):
                    if held is not None and not held.ended:  # one lease at a time per session: it is busy
                        yield lease_pb2.LeaseResponse(holder=held.holder, since=held.granted)
                        continue
                    held, answer = await self._take(request.take, context)
                    yield answer
                elif request.HasField("release"):
                    if held is not None and held.lease_id == request.release.lease_id:
                        self._end(held, "released")
                        held = None
                    yield lease_pb2.LeaseResponse()
        finally:
            if held is not None:
                self._end(held, "holder vanished")

    async def _take(
        self, request: lease_pb2.LeaseRequest, context: ServicerContext
    ) -> tuple[lease_pb2.LeaseRecord | None, lease_pb2.LeaseResponse]:
        """The lease for ``request.holder`` if it is free (its record, and the granting answer), else who has it."""
        if len(request.holder) > MAX_HOLDER:
            why = (
                f"lease holder name is {len(request.holder)} characters, more than the {MAX_HOLDER} an exporter keeps: "
                f"shorten it (it begins {request.holder[:40]!r})"
            )
            log.info("refused a lease: %s", why)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
        current = self.current
        if current is not None:  # no await between this check and taking the lease: one event loop, no race
            return None, lease_pb2.LeaseResponse(holder=current.holder, since=current.granted)
        record = lease_pb2.LeaseRecord(lease_id=uuid4().hex[:12], holder=request.holder, granted=time.time())
        self.current, self._released = record, asyncio.Event()
        self.records.append(record)
        log.info("lease %s taken by %s", record.lease_id, record.holder)
        return record, lease_pb2.LeaseResponse(lease_id=record.lease_id)

    async def Release(self, request: lease_pb2.ReleaseRequest, context: ServicerContext) -> lease_pb2.ReleaseResponse:
        current = self.current
        if current is not None and current.lease_id == request.lease_id:
            self._end(current, "released")
            self._released.set()  # ends the Lease call
        return lease_pb2.ReleaseResponse()

    def _end(self, record: lease_pb2.LeaseRecord, how: str) -> None:
        if record.ended:
            return
        record.released, record.ended = time.time(), how
        if self.current is record:
            self.current = None
        log.info("lease %s %s after %.3f s", record.lease_id, how, record.released - record.granted)

    async def GetLeases(
        self, request: lease_pb2.GetLeasesRequest, context: ServicerContext
    ) -> lease_pb2.GetLeasesResponse:
        """Who held the exporter and when. A lease id is its holder's secret (it lets calls through, and
        releases): the one held now is never shown."""
        leases = []
        for record in self.records:
            if not record.ended:
                record = lease_pb2.LeaseRecord(holder=record.holder, granted=record.granted)
            leases.append(record)
        return lease_pb2.GetLeasesResponse(leases=leases)
