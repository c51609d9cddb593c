"""Build the client tree an exporter describes in GetReport, and connect to exporters."""

from __future__ import annotations

from jumpstarter.client.allow import load_client_class
from jumpstarter.client.base import CompositeClient, DriverClient
from jumpstarter.client.connection import CONNECT_TIMEOUT, TLS, Connection
from jumpstarter.driver.base import CLIENT_LABEL, NAME_LABEL
from jumpstarter.errors import ClientClassError
from jumpstarter.v1 import jumpstarter_pb2

# Upstream's client classes that ours stand in for (their modules never share an environment with us).
ALIASES: dict[str, type[DriverClient]] = {
    "jumpstarter_driver_composite.client.CompositeClient": CompositeClient,
}


def client_from_report(
    connection: Connection, report: jumpstarter_pb2.GetReportResponse, trusted: frozenset[str] = frozenset()
) -> DriverClient:
    """Instantiate each driver's client class, children before parents; return the root.

    ``trusted`` client class paths skip the allow list (serve() trusts the drivers it was handed).
    """
    by_uuid = {r.uuid: r for r in report.reports}
    children: dict[str, list[str]] = {r.uuid: [] for r in report.reports}
    roots = []
    for r in report.reports:
        if r.HasField("parent_uuid") and r.parent_uuid in by_uuid:
            children[r.parent_uuid].append(r.uuid)
        else:
            roots.append(r.uuid)
    if not roots:
        raise ClientClassError(f"exporter at {connection.address} reports no drivers")

    def build(uuid: str, path: str) -> DriverClient:
        r = by_uuid[uuid]
        labels = dict(r.labels)
        kids = {}
        for child in children[uuid]:
            name = by_uuid[child].labels.get(NAME_LABEL, child)
            kids[name] = build(child, f"{path}.{name}".lstrip("."))
        class_path = labels.get(CLIENT_LABEL, "")
        cls = ALIASES.get(class_path) or load_client_class(class_path, path, DriverClient, class_path in trusted)
        try:
            return cls(uuid=uuid, labels=labels, children=kids, connection=connection, name=path)
        except TypeError as exc:
            raise ClientClassError(f"export {path!r}: client class {class_path!r} can't be built: {exc}") from exc

    root = report.uuid if report.uuid in by_uuid else roots[0]
    return build(root, "")


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
        connection.wait_ready(timeout)
        return client_from_report(connection, connection.report(), trusted)
    except BaseException:
        connection.close()
        raise
