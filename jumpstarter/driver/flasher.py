"""``FlasherInterface``: the exporter side of a flasher, under upstream Jumpstarter's name.

A driver that writes images to a device (and reads them back) implements these two methods and gets
``jumpstarter.client.flasher.FlasherClient`` as its client: ``client.flash("image.raw")`` uploads the
file, and the driver reads it with ``self.resource(source)``.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any

__all__ = ["FlasherInterface"]


class FlasherInterface(metaclass=ABCMeta):
    """Mix in before ``Driver``: ``class MyFlasher(FlasherInterface, Driver)``; export both methods."""

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.flasher.FlasherClient"

    # Implemented as plain or async methods, returning what the client's flash() and dump() return.

    @abstractmethod
    def flash(self, source: Any, target: str | None = None) -> Any:
        """Write the image ``source`` (a resource handle) to ``target`` (a partition, or the default)."""

    @abstractmethod
    def dump(self, target: Any, partition: str | None = None) -> Any:
        """Read ``partition`` (or the default) out into ``target`` (a resource handle)."""
