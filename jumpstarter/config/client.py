"""Upstream's client configuration, which leases exporters from a controller: not part of this runtime.

Upstream's tools (``jumpstarter_testing.JumpstarterTest`` among them) fall back on it when no exporter is
given; here that fallback says how to give one instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

from jumpstarter.errors import ConfigError

HOW = (
    "this runtime connects to exporters directly and has no controller client configuration: run the tests "
    "with `pytest --exporter ADDRESS_OR_YAML`, or inside `jumpstarter shell ADDRESS -- pytest ...` "
    "(JUMPSTARTER_HOST)"
)


class ClientConfigV1Alpha1:
    """Upstream's controller client config; loading one explains how to reach an exporter here."""

    @classmethod
    def load(cls, alias: str = "default", *args: Any, **kwargs: Any) -> NoReturn:
        raise ConfigError(f"client config {alias!r}: {HOW}")


class ClientConfigV1Alpha1Drivers:
    """Upstream's allow list of client packages; ours is in jumpstarter.client.allow."""

    def __init__(self, allow: list[str] | None = None, unsafe: bool = False) -> None:
        self.allow, self.unsafe = list(allow or []), unsafe
