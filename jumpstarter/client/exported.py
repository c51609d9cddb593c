"""The names of the methods a client's driver exports, as the exporter's report gave them."""

from __future__ import annotations

from typing import Any


def exported_methods(client: Any) -> list[str]:
    """Every method the client's driver exports: all of them from an exporter of ours, those with help from
    upstream's (its report names no others). ``client``: a DriverClient (or one built by hand, with no connection)."""
    try:
        names = client.connection.exported_methods(client.uuid)
    except Exception:  # a client built by hand has no connection
        names = None
    return sorted(set(names or ()) | set(getattr(client, "methods_description", None) or {}))
