"""Which ``jumpstarter`` is installed: this runtime, or upstream's package of the same name put over it.

Both own the module and the distribution name ``jumpstarter``. A ``pip install`` of a driver package that needs
another jumpstarter version (``jumpstarter==0.10.0``) makes pip replace this runtime with upstream's, and a driver
package left from such an install may not fit this runtime. Things then fail far from the cause; these checks say
it where our code can see it (the CLI, the pytest plugin, loading a driver or client class). docs/install.md says
how to install this runtime and keep it.
"""

from __future__ import annotations

import functools
from importlib import metadata
from pathlib import Path

VERSION = "0.9.0+hil.1"  # this runtime's distribution version (pyproject.toml's; a test keeps them equal)
API = VERSION.partition("+")[0]  # the upstream release whose API it follows
KEEP = "docs/install.md#keeping-it"  # where the docs say how to keep it


def foreign_distribution() -> str | None:
    """Why it is wrong, when the installed ``jumpstarter`` distribution is not this runtime although this
    runtime's modules are the ones running (from a checkout on sys.path, over upstream's install); else None."""
    try:
        version = metadata.version("jumpstarter")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed: nothing to compare
        return None
    if "+hil" in version:
        return None
    here = Path(__file__).resolve().parent
    return (
        f"the installed jumpstarter distribution is {version}, upstream's Jumpstarter, not this runtime "
        f"({VERSION}), whose modules run here from {here}: a pip install replaced it (a driver package that "
        f"requires another jumpstarter version?). Install this runtime again and keep it: see {KEEP}"
    )


def driver_requirement(module: str, scan: bool = False) -> str | None:
    """Why the distribution providing ``module`` (a driver or client module) may not work here, when it requires a
    jumpstarter that this runtime's version doesn't meet; else None. Without ``scan``, only the distribution named
    after the module (``jumpstarter-driver-power`` for ``jumpstarter_driver_power``) is looked at, which is cheap;
    with it, every distribution providing the module (what a failure is worth)."""
    top = module.partition(".")[0]
    for dist in _distributions(top, scan):
        needs = _jumpstarter_requirement(dist)
        if needs is not None:
            name, version = dist.metadata["Name"], dist.version
            return (
                f"{name} {version} requires {needs}, which this runtime (jumpstarter {VERSION}, upstream's {API} "
                f"API) does not meet: it was made for another jumpstarter. Install its release for jumpstarter "
                f"{API} (pip install -c constraints.txt {name}, the constraint holding jumpstarter=={VERSION}: "
                f"see {KEEP})"
            )
    return None


def misfit(class_path: str) -> str:
    """``; (why)``, to end the message of a driver or client class that failed to import, when its package was
    made for another jumpstarter; else ""."""
    why = driver_requirement(class_path, scan=True)
    return f"; {why}" if why else ""


@functools.cache
def _distributions(top: str, scan: bool) -> tuple[metadata.Distribution, ...]:
    names = [top.replace("_", "-")]
    if scan:
        names += metadata.packages_distributions().get(top, [])
    found: dict[str, metadata.Distribution] = {}
    for name in dict.fromkeys(names):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.setdefault(dist.metadata["Name"] or name, dist)
    return tuple(found.values())


def _jumpstarter_requirement(dist: metadata.Distribution) -> str | None:
    """The distribution's requirement on jumpstarter, when this runtime's version doesn't meet it."""
    from packaging.requirements import InvalidRequirement, Requirement  # pytest's dependency, so ours too

    for text in dist.requires or ():
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.name.lower() != "jumpstarter":
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra's, or another platform's
        if not requirement.specifier.contains(VERSION, prereleases=True):
            return str(requirement)
    return None
