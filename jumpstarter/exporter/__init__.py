"""The exporter: serves a tree of drivers over gRPC (``Session`` is upstream's name for the service)."""

from typing import Any

__all__ = ["Session"]


def __getattr__(name: str) -> Any:
    # Imported on first use: importing a submodule of this package must not load the gRPC server.
    if name == "Session":
        from jumpstarter.exporter.session import Session

        return Session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
