"""Upstream's import path for ``serve`` and ``env``. They live above ``common/`` (``jumpstarter.inprocess``,
``jumpstarter.utils.env``), which imports nothing of the client, the driver or the exporter: they are imported
here only when asked for."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jumpstarter.inprocess import serve
    from jumpstarter.utils.env import env

__all__ = ["env", "serve"]
_HOMES = {"serve": "jumpstarter.inprocess", "env": "jumpstarter.utils.env"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
