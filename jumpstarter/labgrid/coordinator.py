"""A client session with labgrid's coordinator: the lab's places and resources, reservations, acquire/release.

One ``Session`` per process (a pytest worker, ``jumpstarter lab``): the coordinator keys sessions by the TCP
peer, so each gets a channel of its own (``grpc.use_local_subchannel_pool``). The session's stream brings every
change of places and resources; ``wait_change`` wakes on them, so a waiter learns of a freed place at once.
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import queue
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

CONNECT_TIMEOUT = 5.0  # seconds for the coordinator to answer at start
CALL_TIMEOUT = 30.0
MARK = "(jumpstarter)"  # ends the session names of our plugin: holders that keep an exporter lease with a place


class CoordinatorError(Exception):
    """The coordinator can't be reached, or refused a call; the message names its address and the call."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def parse_url(url: str) -> str:
    """``labgrid://HOST:PORT`` (or a bare HOST:PORT) -> HOST:PORT; ValueError if it is neither."""
    address = url.removeprefix("labgrid://")
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        raise ValueError(f"{url!r} is not labgrid://HOST:PORT")
    return address


def pb2() -> tuple[Any, Any]:
    """labgrid's generated messages, and a stub factory for its Coordinator service.

    Read from labgrid's installed file without importing the ``labgrid`` package, whose ``__init__`` imports
    its targets and drivers: half a second per process, seconds on a loaded machine. The module is registered
    under its own name, so a later ``import labgrid`` (labgrid's pytest plugin) uses it too."""
    name = "labgrid.remote.generated.labgrid_coordinator_pb2"
    messages = sys.modules.get(name)
    if messages is None:
        spec = importlib.util.find_spec("labgrid")  # finds the package without running its __init__
        if spec is None or not spec.submodule_search_locations:
            raise CoordinatorError("a labgrid lab needs labgrid: pip install 'jumpstarter[labgrid]'")
        path = Path(list(spec.submodule_search_locations)[0]) / "remote" / "generated" / "labgrid_coordinator_pb2.py"
        loader = importlib.util.spec_from_file_location(name, path)
        if loader is None or loader.loader is None:
            raise CoordinatorError(f"labgrid's coordinator messages are not at {path}")
        messages = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(messages)
        sys.modules[name] = messages
    return messages, _stub


def _stub(channel: grpc.Channel) -> Any:
    """Callables for each RPC of labgrid.Coordinator, by name, from the service's descriptor."""
    from google.protobuf import message_factory

    messages = sys.modules["labgrid.remote.generated.labgrid_coordinator_pb2"]
    stub = type("CoordinatorStub", (), {})()
    for method in messages.DESCRIPTOR.services_by_name["Coordinator"].methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        kind = "stream_stream" if method.client_streaming else "unary_unary"
        call = getattr(channel, kind)(
            f"/labgrid.Coordinator/{method.name}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        setattr(stub, method.name, call)
    return stub


def session_name(role: str = "") -> str:
    """Who we are to the coordinator: labgrid's ``host/user``, made unique per process and marked as ours."""
    extra = f" {role}" if role else ""
    return f"{socket.gethostname()}/{getpass.getuser()} pid {os.getpid()}{extra} {MARK}"


def value_of(mapvalue: Any) -> object:
    kind = mapvalue.WhichOneof("kind")
    return getattr(mapvalue, kind) if kind else None


@dataclass
class Place:
    name: str
    tags: dict[str, str]
    acquired: str  # the holder's self-declared name, "" when free
    acquired_resources: list[str]
    reservation: str
    changed: float
    matches: list[tuple[str, str, str]]  # exporter, group, class patterns


@dataclass
class Resource:
    exporter: str
    group: str
    name: str
    cls: str
    params: dict[str, object]
    acquired: str
    avail: bool


def _match(pattern: str, value: str) -> bool:
    from fnmatch import fnmatchcase

    return fnmatchcase(value, pattern)


class Session:
    """A client session; ``close()`` ends it. CoordinatorError (unreachable) when it can't start."""

    def __init__(self, address: str, role: str = "", timeout: float = CONNECT_TIMEOUT, name: str = "") -> None:
        self.address, self.name = address, name or session_name(role)  # name: another labgrid user's, not ours
        self._messages, services = pb2()
        self._channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        self._stub = services(self._channel)
        self.places: dict[str, Place] = {}
        self.resources: dict[tuple[str, str, str], Resource] = {}
        self.broken: str | None = None  # why the session's stream ended
        self._changed = threading.Condition()
        self._version = 0
        self._synced = threading.Event()
        self._outgoing: queue.Queue[Any] = queue.Queue()
        m = self._messages
        self._outgoing.put(m.ClientInMessage(startup=m.StartupDone(version="26.0.1", name=self.name)))
        self._outgoing.put(m.ClientInMessage(subscribe=m.Subscribe(all_places=True)))
        self._outgoing.put(m.ClientInMessage(subscribe=m.Subscribe(all_resources=True)))
        self._outgoing.put(m.ClientInMessage(sync=m.Sync(id=1)))
        self._call = self._stub.ClientStream(self._requests())
        self._thread = threading.Thread(target=self._pump, name="labgrid-session", daemon=True)
        self._thread.start()
        if not self._synced.wait(timeout) or self.broken:
            self.close()
            why = self.broken or f"no answer in {timeout:g} s"
            raise CoordinatorError(f"labgrid coordinator at {address} can't be reached: {why}", unreachable=True)

    def _requests(self) -> Iterator[Any]:
        while (message := self._outgoing.get()) is not None:
            yield message

    def _pump(self) -> None:
        try:
            for out in self._call:
                for update in out.updates:
                    self._apply(update)
                if out.HasField("sync"):
                    self._synced.set()
                with self._changed:
                    self._version += 1
                    self._changed.notify_all()
            self.broken = "the coordinator ended the session"
        except grpc.RpcError as err:
            self.broken = err.details() or str(err.code())
        self._synced.set()  # whoever waits for the start learns it failed
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _apply(self, update: Any) -> None:
        kind = update.WhichOneof("kind")
        if kind == "place":
            p = update.place
            self.places[p.name] = Place(
                p.name,
                dict(p.tags),
                p.acquired if p.HasField("acquired") else "",
                list(p.acquired_resources),
                p.reservation if p.HasField("reservation") else "",
                p.changed,
                [(m.exporter, m.group, m.cls) for m in p.matches],
            )
        elif kind == "del_place":
            self.places.pop(update.del_place, None)
        elif kind == "resource":
            r = update.resource
            key = (r.path.exporter_name, r.path.group_name, r.path.resource_name)
            params = {k: value_of(v) for k, v in r.params.items()}
            self.resources[key] = Resource(*key, r.cls, params, r.acquired, r.avail)
        elif kind == "del_resource":
            path = update.del_resource
            self.resources.pop((path.exporter_name, path.group_name, path.resource_name), None)

    @property
    def version(self) -> int:
        return self._version

    def wait_change(self, seen: int, timeout: float) -> int:
        """Wait up to ``timeout`` s for an update after ``seen`` (a ``version``); the version now."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen or self.broken is not None, max(0.0, timeout))
            return self._version

    def resources_of(self, place: Place, cls: str) -> list[Resource]:
        """The resources of class ``cls`` that ``place``'s matches name."""
        return [
            r
            for r in list(self.resources.values())
            if r.cls == cls
            and any(_match(e, r.exporter) and _match(g, r.group) and _match(c, r.cls) for e, g, c in place.matches)
        ]

    def unfilled(self, place: Place, cls: str) -> list[str]:
        """The matches of ``place`` for class ``cls`` that no resource fills now (their exporter stopped, or not
        back yet), as ``exporter/group/class``."""
        have = self.resources_of(place, cls)
        return [
            f"{e}/{g}/{c}"
            for e, g, c in place.matches
            if _match(c, cls) and not any(_match(e, r.exporter) and _match(g, r.group) for r in have)
        ]

    def _unary(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            unreachable = err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            raise CoordinatorError(
                f"labgrid coordinator at {self.address}: {method}: {err.details() or err.code()}",
                unreachable=unreachable,
            ) from None

    def add_place(self, name: str) -> None:
        self._unary("AddPlace", self._messages.AddPlaceRequest(name=name))

    def add_match(self, place: str, pattern: str) -> None:
        self._unary("AddPlaceMatch", self._messages.AddPlaceMatchRequest(placename=place, pattern=pattern))

    def set_tags(self, place: str, tags: dict[str, str]) -> None:
        self._unary("SetPlaceTags", self._messages.SetPlaceTagsRequest(placename=place, tags=tags))

    def reserve(self, tags: dict[str, str], priority: float = 0) -> str:
        """A reservation of one place carrying ``tags`` (``name`` is a place's name); its token."""
        m = self._messages
        request = m.CreateReservationRequest(filters={"main": m.Reservation.Filter(filter=tags)}, prio=priority)
        return self._unary("CreateReservation", request).reservation.token

    def poll(self, token: str) -> str | None:
        """The place allocated to reservation ``token``, or None while it waits; keeps it alive."""
        reservation = self._unary("PollReservation", self._messages.PollReservationRequest(token=token)).reservation
        for group in reservation.allocations.values():
            return str(group)
        return None

    def reservations(self) -> list[tuple[str, str]]:
        """Every reservation at the coordinator: (owner, token)."""
        answer = self._unary("GetReservations", self._messages.GetReservationsRequest())
        return [(r.owner, r.token) for r in answer.reservations]

    def cancel(self, token: str) -> None:
        self._unary("CancelReservation", self._messages.CancelReservationRequest(token=token))

    def acquire(self, place: str) -> None:
        self._unary("AcquirePlace", self._messages.AcquirePlaceRequest(placename=place))

    def release(self, place: str, holder: str | None = None) -> None:
        """Release ``place``; with ``holder``, only if that one holds it (labgrid's ``fromuser``)."""
        request = self._messages.ReleasePlaceRequest(placename=place)
        if holder is not None:
            request.fromuser = holder
        self._unary("ReleasePlace", request)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._outgoing.put(None)
        self._call.cancel()
        self._channel.close()
