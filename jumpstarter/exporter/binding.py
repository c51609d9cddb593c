"""Why an exporter could not listen: gRPC's own error says only "Failed to bind", its cause goes to a log line.

Binding a plain socket to the same address finds the cause again (in use, not allowed, not on this host), so
the exporter's error can say it in words.
"""

from __future__ import annotations

import errno
import socket

_CAUSES = {
    errno.EADDRINUSE: "address {address} already in use (another exporter or program listens there: stop it, or "
    "choose another port; port 0 picks a free one)",
    errno.EACCES: "permission denied to listen on {address} (ports below 1024 need root)",
    errno.EADDRNOTAVAIL: "address {address} is not one of this host's addresses",
}


def bind_failure(address: str, target: str) -> str | None:
    """Why ``target`` (a gRPC ``HOST:PORT``) can't be bound, in words naming ``address``; None if unknown."""
    if target.startswith("unix:"):
        return None
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, ValueError):
        return None
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno in _CAUSES:
                    return _CAUSES[exc.errno].format(address=address)
    return None
