"""Build the client tree an exporter describes in GetReport, and connect to exporters."""

from __future__ import annotations

import importlib.util
import logging

from jumpstarter.client.allow import load_client_class
from jumpstarter.client.base import CompositeClient, DriverClient, StubDriverClient
from jumpstarter.client.connection import CONNECT_TIMEOUT, TLS, Connection
from jumpstarter.common.wire import CLIENT_LABEL, NAME_LABEL
from jumpstarter.errors import ClientClassError
from jumpstarter.v1 import jumpstarter_pb2

log = logging.getLogger("jumpstarter.client")

MAX_DEPTH = 64  # levels of children below the root a report may have

# Upstream's client classes that ours stand in for when their package is not installed.
ALIASES: dict[str, type[DriverClient]] = {
    "jumpstarter_driver_composite.client.CompositeClient": CompositeClient,
}


def client_from_report(
    connection: Connection, report: jumpstarter_pb2.GetReportResponse, trusted: frozenset[str] = frozenset()
) -> DriverClient:
    """Instantiate each driver's client class, children before parents; return the root.

    Reports come parents first. A driver may be reported twice (upstream's ``Proxy`` stands in for
    another driver under a second name), so a parent is the latest report with the parent's uuid.
    ``trusted`` client class paths skip the allow list (serve() trusts the drivers it was handed).
    """
    reports = list(report.reports)
    if not reports:
        raise ClientClassError(f"exporter at {connection.address} reports no drivers")
    children: list[list[int]] = [[] for _ in reports]
    roots: list[int] = []
    last_seen: dict[str, int] = {}
    for index, r in enumerate(reports):
        parent = last_seen.get(r.parent_uuid) if r.HasField("parent_uuid") else None
        (children[parent] if parent is not None else roots).append(index)
        last_seen[r.uuid] = index

    def build(index: int, path: str) -> DriverClient:
        if path.count(".") >= MAX_DEPTH:  # parents come first, so no cycle; but a hostile report may nest deep
            raise ClientClassError(f"exporter at {connection.address} reports a driver tree deeper than {MAX_DEPTH}")
        r = reports[index]
        labels = dict(r.labels)
        kids = {}
        for child in children[index]:
            name = reports[child].labels.get(NAME_LABEL, reports[child].uuid)
            kids[name] = build(child, f"{path}.{name}".lstrip("."))
        class_path = labels.get(CLIENT_LABEL, "")
        cls = client_class(class_path, path, class_path in trusted)
        try:
            return cls(
                uuid=r.uuid,
                labels=labels,
                children=kids,
                connection=connection,
                name=path,
                description=r.description if r.HasField("description") else None,
                methods_description=dict(r.methods_description),
            )
        except TypeError as exc:
            raise ClientClassError(f"export {path!r}: client class {class_path!r} can't be built: {exc}") from exc

    root = last_seen.get(report.uuid, roots[0] if roots else 0)
    return build(root, "")


def fresh_tree(root: DriverClient, connection: Connection | None = None) -> DriverClient:
    """A new client tree like ``root``'s: the same client classes, uuids, names, labels and descriptions (what the
    exporter's report gave), but new client objects, with none of the state the old ones gathered (a client's
    cache, its open streams); talking through ``connection`` (``root``'s own by default). Nothing is asked of
    the exporter. The pytest plugin gives each test's fixtures one, so no test sees what another left behind."""

    def build(node: DriverClient) -> DriverClient:
        return type(node)(
            uuid=node.uuid,
            labels=dict(node.labels),
            children={name: build(child) for name, child in node.children.items()},
            connection=node.connection if connection is None else connection,
            name=node.name,
            description=node.description,
            methods_description=dict(node.methods_description),
        )

    return build(root)


def client_class(class_path: str, path: str, trusted: bool) -> type[DriverClient]:
    """The client class for the driver at export ``path``; a stub when its package is not installed here.

    As upstream does, a driver whose client package is missing on this side doesn't stop the others
    from being used: its client raises, naming the package to install, when it is used.
    """
    top = class_path.partition(".")[0]
    if top.isidentifier() and importlib.util.find_spec(top) is None:
        if class_path in ALIASES:
            return ALIASES[class_path]
        log.warning("export %r: driver client %r is not installed here; using a stub", path or "<root>", class_path)
        return StubDriverClient
    return load_client_class(class_path, path, DriverClient, trusted)


def connect(
    address: str,
    *,
    passphrase: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
    trusted: frozenset[str] = frozenset(),
    tls: TLS = False,
) -> DriverClient:
    """Connect to the exporter at ``address`` and return its root client.

    ``address`` is ``HOST:PORT``, ``unix:///path`` or a socket path. Use it as
    a context manager to close the connection: ``with connect(a) as exporter:``.
    Raises ConnectError when nothing answers within ``timeout`` seconds.
    ``trusted`` client class paths are loaded without the allow-list check.
    ``tls``: False for plain gRPC; True for TLS trusting the system's CAs (or the file named by
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH); or the path of the CA certificate (PEM) to trust.
    """
    connection = Connection(address, passphrase, tls)
    try:
        return client_from_report(connection, connection.report(timeout, wait=True), trusted)
    except BaseException:
        connection.close()
        raise
