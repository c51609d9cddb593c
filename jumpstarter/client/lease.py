"""Taking an exporter's exclusive lease from the client side.

``try_lease(connection, holder)`` returns a held ``Lease`` or ``Busy`` (who
holds it, since when) at once; waiting is the caller's policy. While held,
every call on the connection carries the lease id. An exporter without
``LeaseService`` (upstream's) gets a lock file in the temp directory instead:
that keeps the runs of one machine apart, though not those of two machines.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc

from jumpstarter.client.connection import Connection
from jumpstarter.common.folders import private_folder
from jumpstarter.common.wire import MAX_HOLDER, when
from jumpstarter.errors import ConnectError, error_from_rpc
from jumpstarter.v1 import lease_pb2, lease_pb2_grpc


@dataclass(frozen=True)
class Busy:
    """The exporter is leased by ``holder`` since ``since`` (seconds since the epoch)."""

    holder: str
    since: float

    def __str__(self) -> str:
        return f"leased by {self.holder} since {when(self.since)}"


class Lease:
    """A lease held on ``connection``; ``release()`` gives it back (idempotent)."""

    def __init__(
        self, connection: Connection, lease_id: str, session: _Session | None = None, lock: IO[str] | None = None
    ) -> None:
        """``session``: the connection's LeaseSession call it was taken on (released there); ``lock``: the
        locked file that stands for a lease where the exporter keeps none."""
        self.connection, self.lease_id = connection, lease_id
        self._session, self._lock = session, lock
        self.held = True
        connection.hold(lease_id if session is not None else None)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self.connection.hold(None)
        if self._lock is not None:
            self._lock.close()  # closing the file drops its flock
        if self._session is not None:
            self._session.release(self.lease_id)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_lease(connection: Connection, holder: str) -> Lease | Busy:
    """Take the exporter's lease if it is free; never waits for another holder. A holder name longer than an
    exporter keeps is shortened in its middle (a test id's end says most)."""
    if len(holder) > MAX_HOLDER:
        keep = (MAX_HOLDER - 3) // 2
        holder = f"{holder[:keep]}...{holder[-keep:]}"
    session = _session(connection)
    try:
        answer = session.take(holder)
    except (grpc.RpcError, ConnectError) as err:
        _sessions.pop(connection, None)  # broken: the next lease opens another
        if isinstance(err, ConnectError):
            raise
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            return _lock_file(connection, holder)  # an exporter without our leases: upstream's
        raise error_from_rpc(err, address=connection.address, method="lease") from None
    if not answer.lease_id:
        return Busy(answer.holder, answer.since)
    return Lease(connection, answer.lease_id, session=session)


class _Session:
    """A connection's LeaseSession call: its leases, one after another, two messages each on a call that stays
    open (a new call and a Release call for each, otherwise). One caller at a time; ends with the connection."""

    def __init__(self, connection: Connection) -> None:
        self._outbox: queue.SimpleQueue[lease_pb2.LeaseSessionRequest | None] = queue.SimpleQueue()
        stub = lease_pb2_grpc.LeaseServiceStub(connection.channel)
        self._call = stub.LeaseSession(iter(self._outbox.get, None), metadata=connection.metadata)
        self._replies = iter(self._call)
        self._lock = threading.Lock()
        connection.on_close.append(self.close)

    def _ask(self, request: lease_pb2.LeaseSessionRequest) -> lease_pb2.LeaseResponse:
        with self._lock:
            self._outbox.put(request)
            try:
                return next(self._replies)
            except StopIteration:
                raise ConnectError("the exporter ended the lease session") from None

    def take(self, holder: str) -> lease_pb2.LeaseResponse:
        return self._ask(lease_pb2.LeaseSessionRequest(take=lease_pb2.LeaseRequest(holder=holder)))

    def release(self, lease_id: str) -> None:
        """End the lease; returns once the exporter has ended it (or can't be reached: then it is over too)."""
        try:
            self._ask(lease_pb2.LeaseSessionRequest(release=lease_pb2.ReleaseRequest(lease_id=lease_id)))
        except (grpc.RpcError, ConnectError):
            pass

    def close(self) -> None:
        self._outbox.put(None)
        self._call.cancel()


_sessions: weakref.WeakKeyDictionary[Connection, _Session] = weakref.WeakKeyDictionary()
_sessions_lock = threading.Lock()


def _session(connection: Connection) -> _Session:
    """The connection's lease session, opened on first use."""
    with _sessions_lock:
        session = _sessions.get(connection)
        if session is None:
            session = _sessions[connection] = _Session(connection)
        return session


def lease_records(connection: Connection) -> list[lease_pb2.LeaseRecord]:
    """The exporter's record of its leases, oldest first (the one held now has ``released == 0``)."""
    stub = lease_pb2_grpc.LeaseServiceStub(connection.channel)
    try:
        return list(stub.GetLeases(lease_pb2.GetLeasesRequest(), metadata=connection.metadata).leases)
    except grpc.RpcError as err:
        raise error_from_rpc(err, address=connection.address, method="GetLeases") from None


def _lock_file(connection: Connection, holder: str) -> Lease | Busy:
    # Per user, private, and no symlink followed: another user can't make us write a file of their choosing.
    folder = private_folder(Path(tempfile.gettempdir()) / f"jumpstarter-leases-{os.getuid()}")
    path = folder / (hashlib.sha256(connection.target.encode()).hexdigest()[:16] + ".lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    file = open(descriptor, "a+")  # noqa: SIM115 - held open for the lease's lifetime
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder_now, _, since = file.read().partition("\n")
        file.close()
        return Busy(holder_now or "another process of this machine", float(since or 0) or os.path.getmtime(path))
    file.truncate(0)
    file.write(f"{holder}\n{time.time()}")
    file.flush()
    return Lease(connection, f"lock:{path}", lock=file)
