"""Client-side driver API, under upstream Jumpstarter's names."""

from typing import Any

from jumpstarter.client.allow import allow_client_modules
from jumpstarter.client.base import CompositeClient, DriverClient
from jumpstarter.client.tree import connect

__all__ = ["CompositeClient", "DriverClient", "FlasherClient", "allow_client_modules", "connect"]


def __getattr__(name: str) -> Any:
    # Upstream exports FlasherClient here; it needs click (the upstream extra), so it is imported on first use.
    if name == "FlasherClient":
        from jumpstarter.client.flasher import FlasherClient

        return FlasherClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
