"""The ``upstream`` extra: third-party modules that upstream Jumpstarter's drivers expect ``jumpstarter`` to bring.

Upstream's ``jumpstarter`` depends on pydantic, click, aiohttp and rich, and its driver packages import them
without declaring them. A plain install of ours stays light; installing it with the extra (``WHEEL[upstream]``, or a
clone's ``PATH[upstream]``: docs/install.md) adds them. Not ``pip install 'jumpstarter[upstream]'``: the package
index's ``jumpstarter`` is upstream's.
Modules of ours that need one of them import it like this, so that its absence names the extra::

    try:
        import click
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, __name__) from None
"""

from __future__ import annotations

EXTRA = "upstream"
MODULES = frozenset({"pydantic", "pydantic_core", "click", "aiohttp", "yarl", "rich"})


def extra_hint(exc: ModuleNotFoundError) -> str:
    """A sentence telling how to get the missing module, when the extra brings it; '' otherwise."""
    top = (exc.name or "").split(".")[0]
    if top not in MODULES:
        return ""
    return (
        f"{top} comes with the {EXTRA} extra: pip install {top}, or install this runtime with the extra "
        f"(its wheel or clone as 'PATH[{EXTRA}]', see docs/install.md; not 'jumpstarter[{EXTRA}]' from the "
        "package index, which is upstream's)"
    )


def missing_extra(exc: ModuleNotFoundError, needed_by: str) -> ModuleNotFoundError:
    """The error to raise when ``needed_by`` can't import a module of the extra."""
    hint = extra_hint(exc) or f"install {exc.name}"
    return ModuleNotFoundError(f"{needed_by} needs {exc.name}: {hint}", name=exc.name)
