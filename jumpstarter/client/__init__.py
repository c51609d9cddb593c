"""Client-side driver API, under upstream Jumpstarter's names."""

from jumpstarter.client.allow import allow_client_modules
from jumpstarter.client.base import CompositeClient, DriverClient
from jumpstarter.client.tree import connect

__all__ = ["CompositeClient", "DriverClient", "allow_client_modules", "connect"]
