"""Checked before the plugin imports anything of jumpstarter's: the ``jumpstarter`` package found is this runtime.

Upstream's package of the same name, installed over ours (by a driver package that requires another jumpstarter
version), would otherwise fail here as "cannot import name ..." from deep inside the plugin.
"""

from __future__ import annotations

import sys
from pathlib import Path

KEEP = "docs/install.md#keeping-it"


def check_runtime() -> None:
    """ImportError naming the cause when ``jumpstarter`` is not this runtime; a warning on standard error when it
    is, but the installed distribution of that name is upstream's (see jumpstarter.installed)."""
    try:
        from jumpstarter import installed
    except ImportError:
        import jumpstarter

        found = ", ".join(getattr(jumpstarter, "__path__", [])) or getattr(jumpstarter, "__file__", "?")
        raise ImportError(
            f"pytest_jumpstarter (this runtime's pytest plugin, at {Path(__file__).resolve().parent}) found a "
            f"jumpstarter package that is not this runtime, at {found}: upstream's Jumpstarter, put over it by a pip "
            f"install (a driver package that requires another jumpstarter version?). Install this runtime again "
            f"and keep it: see {KEEP}"
        ) from None
    warning = installed.foreign_distribution()
    if warning:
        print(f"pytest_jumpstarter: warning: {warning}", file=sys.stderr)
