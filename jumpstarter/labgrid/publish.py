"""An exporter of ours in a labgrid lab: it announces itself to the coordinator for as long as it serves.

It speaks labgrid's exporter protocol itself (no labgrid-exporter beside it): one process to run, the board
leaves the lab's directory the moment the exporter stops (the coordinator drops the resources of a closed
stream), and when the coordinator restarts the exporter comes back by itself. Its place, named after the
exporter, is made on first announce (tags: the labels that can be tags) unless the lab admin made it already.
Exporters that serve parts of one board (its power, its serial console) publish into one place named for the
board (``place``): the first makes it, each adds its match to it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from jumpstarter.labgrid import board, preflight
from jumpstarter.labgrid.coordinator import CoordinatorError, Session, pb2

RETRY = 1.0  # seconds between attempts to reach a coordinator that went away
CHECK_TIMEOUT = 3.0  # seconds the check before publishing waits for the coordinator (then: tried again later)
log = logging.getLogger("jumpstarter.labgrid")


class Publisher:
    """Keeps the resource of one exporter in the coordinator at ``coordinator`` until ``stop()``."""

    def __init__(
        self,
        coordinator: str,
        name: str,
        address: str,
        tls: bool,
        exports: list[str],
        labels: dict[str, str],
        place: str | None = None,
    ) -> None:
        self.coordinator, self.name = coordinator, name
        self.place, self.shared = place or name, place is not None  # a place of its own, or one it shares
        self.params, self.labels = board.params(address, tls, exports, labels), labels
        self.tags = board.tags(labels)
        self.published = threading.Event()  # set while the coordinator has our resource
        self._stop = threading.Event()
        self._outgoing: queue.Queue[Any] = queue.Queue()
        self._call: Any = None
        self._messages, self._services = pb2()
        self._thread = threading.Thread(target=self._run, name="labgrid-publish", daemon=True)

    def start(self) -> Publisher:
        """Start publishing; PublishError (preflight.py) when that would be wrong. A coordinator that can't be
        reached yet is no error: it is tried again every second."""
        try:
            session = Session(self.coordinator, role=f"exporter {self.name}", timeout=CHECK_TIMEOUT)
        except CoordinatorError:
            session = None
        if session is not None:
            try:
                preflight.check(session, self.name, self.place, self.shared, self.labels, str(self.params["address"]))
            finally:
                session.close()
        self._thread.start()
        return self

    def _resource(self, acquired: str = "") -> Any:
        m = self._messages
        resource = m.Resource(cls=board.RESOURCE_CLASS, acquired=acquired, avail=True)
        resource.path.exporter_name = self.name
        resource.path.group_name = board.GROUP
        resource.path.resource_name = board.RESOURCE_CLASS
        for key, value in self.params.items():
            if isinstance(value, bool):
                resource.params[key].bool_value = value
            else:
                resource.params[key].string_value = str(value)
        return m.ExporterInMessage(resource=resource)

    def _run(self) -> None:
        said = ""
        while not self._stop.is_set():
            try:
                self._serve()
                why = "the coordinator ended the stream"
            except grpc.RpcError as err:
                why = err.details() or str(err.code())
            except CoordinatorError as exc:
                why = str(exc)
            self.published.clear()
            if self._stop.is_set():
                break
            if why != said:  # once per outage, not once a second
                log.warning("labgrid coordinator at %s: %s; trying again every %g s", self.coordinator, why, RETRY)
                said = why
            self._stop.wait(RETRY)

    def _serve(self) -> None:
        m = self._messages
        self._ensure_place()  # first: the stream's reader must be free to answer the coordinator at once
        channel = grpc.insecure_channel(self.coordinator, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            self._outgoing = queue.Queue()
            self._outgoing.put(m.ExporterInMessage(startup=m.StartupDone(version="26.0.1", name=self.name)))
            self._outgoing.put(self._resource())
            self._call = self._services(channel).ExporterStream(self._requests(self._outgoing))
            first = True
            for out in self._call:
                if first:
                    first = False
                    self.published.set()
                    log.info("published as place %r at the labgrid coordinator %s", self.place, self.coordinator)
                if out.WhichOneof("kind") == "set_acquired_request":
                    request = out.set_acquired_request
                    holder = request.place_name if request.HasField("place_name") else ""
                    self._outgoing.put(self._resource(holder))
                    self._outgoing.put(m.ExporterInMessage(response=m.ExporterResponse(success=True)))
        finally:
            self._outgoing.put(None)
            channel.close()

    def _requests(self, outgoing: queue.Queue[Any]) -> Iterator[Any]:
        while (message := outgoing.get()) is not None:
            yield message

    def _ensure_place(self) -> None:
        """Make the exporter's place, unless one of that name exists (the admin's settings stay); a shared place
        made already gets this exporter's match added, if it lacks it."""
        session = Session(self.coordinator, role=f"exporter {self.name}")
        match = f"{self.name}/{board.GROUP}/{board.RESOURCE_CLASS}"
        try:
            if self.place in session.places:
                if self.shared and not preflight.matched(session.places[self.place].matches, self.name):
                    self._add_match(session, match)
                return
            try:
                session.add_place(self.place)
            except CoordinatorError as exc:
                if "already exists" not in str(exc):  # made by another meanwhile: theirs stays
                    raise
                if self.shared:  # another part of the board made it: this part joins it
                    self._add_match(session, match)
                return
            self._add_match(session, match)
            if self.tags:
                session.set_tags(self.place, self.tags)
        finally:
            session.close()

    def _add_match(self, session: Session, match: str) -> None:
        try:
            session.add_match(self.place, match)
        except CoordinatorError as exc:
            if "already exists" not in str(exc):  # added by this exporter's run before: it stays
                raise

    def stop(self) -> None:
        """Leave the lab: the coordinator drops the resource as the stream closes."""
        self._stop.set()
        self._outgoing.put(None)
        if self._call is not None:
            self._call.cancel()
        if self._thread.is_alive():
            self._thread.join(5)
