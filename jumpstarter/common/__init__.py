"""Helpers shared by drivers and their tests, under upstream Jumpstarter's module names.

The names upstream exports from ``jumpstarter.common`` are here too, but each is imported on first use
(``from jumpstarter.common import TemporaryTcpListener`` loads only ``.tempfile``), so importing the package
stays cheap and needs neither protobuf nor anyio. The pydantic-based modules (``.resources``, ``.oci``) are
never imported from here: they need the ``upstream`` extra.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

if TYPE_CHECKING:
    from .enums import ExporterStatus, LogSource
    from .fls import download_fls, get_fls_binary, get_fls_github_url
    from .tempfile import TemporarySocket, TemporaryTcpListener, TemporaryUnixListener

__all__ = [
    "HOOK_WARNING_PREFIX",
    "ExporterStatus",
    "LogSource",
    "Metadata",
    "TemporarySocket",
    "TemporaryTcpListener",
    "TemporaryUnixListener",
    "download_fls",
    "get_fls_binary",
    "get_fls_github_url",
]

HOOK_WARNING_PREFIX = "[HOOK_WARNING] "
"""Starts a lease hook's output line that is a warning rather than an error (upstream's marker)."""

_LAZY = {
    "ExporterStatus": "enums",
    "LogSource": "enums",
    "download_fls": "fls",
    "get_fls_binary": "fls",
    "get_fls_github_url": "fls",
    "TemporarySocket": "tempfile",
    "TemporaryTcpListener": "tempfile",
    "TemporaryUnixListener": "tempfile",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


@dataclass(kw_only=True, slots=True)
class Metadata:
    """Identity of a driver or exporter: a ``uuid`` and its ``labels``; ``name`` is the jumpstarter.dev/name label.

    Like upstream's (a pydantic dataclass), a uuid given as a string is converted, and labels must map
    strings to strings (ValueError otherwise).
    """

    uuid: UUID = field(default_factory=uuid4)
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.uuid, str):
            try:
                self.uuid = UUID(self.uuid)
            except ValueError as exc:
                raise ValueError(f"uuid: {self.uuid!r} is not a UUID") from exc
        elif not isinstance(self.uuid, UUID):
            raise ValueError(f"uuid: {self.uuid!r} is not a UUID")
        if not isinstance(self.labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.labels.items()
        ):
            raise ValueError(f"labels: {self.labels!r} is not a dict of str to str")

    @property
    def name(self) -> str:
        """The ``jumpstarter.dev/name`` label, or "unknown"."""
        return self.labels.get("jumpstarter.dev/name", "unknown")
