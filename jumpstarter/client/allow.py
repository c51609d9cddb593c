"""Which client classes a client may load when an exporter names them.

A client class path arrives from the network, and importing a module runs its
code, so the module is checked before anything is imported. Allowed are:

- ``jumpstarter.client`` (our own client classes);
- the top-level modules of installed distributions that depend on
  ``jumpstarter`` (every driver package does, as the seed's pyproject shows);
- modules named in the ``JUMPSTARTER_CLIENT_MODULES`` environment variable
  (comma-separated) or passed to ``allow_client_modules()``.
"""

from __future__ import annotations

import os
import re
from functools import cache
from typing import TYPE_CHECKING

from jumpstarter.common.importing import (
    ImportFailed,
    ModuleMissing,
    NameMissing,
    NotAClassPath,
    import_class,
    split_class_path,
)
from jumpstarter.errors import ClientClassError
from jumpstarter.installed import misfit

if TYPE_CHECKING:
    from importlib import metadata  # imported when used: an exporter that imports a client module never is

ENV_VAR = "JUMPSTARTER_CLIENT_MODULES"
_extra: set[str] = set()


def allow_client_modules(*modules: str) -> None:
    """Also allow client classes from these top-level modules in this process."""
    _extra.update(m.split(".")[0] for m in modules)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names_jumpstarter(dist: metadata.Distribution) -> bool:
    """Whether the files ``requires`` reads name jumpstarter at all: reading them is cheap, parsing every
    distribution's metadata is not (some 12 ms for 40 distributions, at a test run's first test)."""
    text = "".join(dist.read_text(name) or "" for name in ("METADATA", "PKG-INFO", "requires.txt"))
    return "jumpstarter" in text.lower()


def _requires_jumpstarter(dist: metadata.Distribution) -> bool:
    for requirement in dist.requires or ():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match and _canonical(match.group(1)) == "jumpstarter":
            return True
    return False


def _top_level_modules(dist: metadata.Distribution) -> set[str]:
    names = set((dist.read_text("top_level.txt") or "").split())
    for file in dist.files or ():
        parts = file.parts
        if not parts or parts[0].endswith((".dist-info", ".egg-info", ".data")) or parts[0] in ("..", "__pycache__"):
            continue
        if len(parts) > 1 or parts[0].endswith(".py"):
            names.add(parts[0].removesuffix(".py"))
    # Editable installs list only a .pth file: fall back on the conventional name.
    names.add(_canonical(dist.metadata["Name"] or "").replace("-", "_"))
    return {n for n in names if n.isidentifier() and not n.startswith("_")}


def _distributions_of(module: str) -> list[metadata.Distribution]:
    """The installed distributions that provide top-level ``module``."""
    from importlib import metadata

    names = metadata.packages_distributions().get(module, [])
    found = [metadata.distribution(name) for name in dict.fromkeys(names)]
    if not found:  # an editable install maps no files: by the conventional name
        try:
            found = [metadata.distribution(module.replace("_", "-"))]
        except metadata.PackageNotFoundError:
            pass
    return found


@cache
def _namesake_is_a_driver_package(module: str) -> bool:
    """Whether the distribution named after top-level ``module`` (``jumpstarter-driver-x`` for
    ``jumpstarter_driver_x``, as driver packages are named) depends on jumpstarter and provides it: the common
    case, answered from one distribution's metadata instead of every one's (driver_package_modules)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(module.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return False
    return _requires_jumpstarter(dist) and module in _top_level_modules(dist)


@cache
def driver_package_modules() -> frozenset[str]:
    """Top-level modules of installed distributions that depend on jumpstarter."""
    from importlib import metadata

    found: set[str] = set()
    for dist in metadata.distributions():
        if _names_jumpstarter(dist) and _requires_jumpstarter(dist):
            found |= _top_level_modules(dist)
    return frozenset(found)


def allowed(module: str) -> bool:
    parts = module.split(".")
    if any(part.startswith("__") for part in parts):  # __main__ runs a program on import
        return False
    top = parts[0]
    if top == "jumpstarter":  # our own client classes live in jumpstarter.client; nothing else of ours is imported
        return parts[:2] == ["jumpstarter", "client"]
    if top in _extra:
        return True
    if top in {m.strip().split(".")[0] for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()}:
        return True
    return _namesake_is_a_driver_package(top) or top in driver_package_modules()


def load_client_class(path: str, export: str, base: type, trusted: bool = False) -> type:
    """Import the client class at ``path`` for the driver at ``export``, checking it first unless ``trusted``."""
    where = f"export {export!r}" if export else "the exporter's root driver"
    try:
        module_name, class_name = split_class_path(path)
    except NotAClassPath:
        raise ClientClassError(f"{where}: client class path {path!r} is not of the form 'module.Class'") from None
    if not trusted and not allowed(module_name):
        if module_name.split(".")[0] == "jumpstarter" or "__" in module_name:
            raise ClientClassError(
                f"{where}: the exporter names client class {path!r}, but {module_name!r} is not a module of client "
                "classes (jumpstarter.client, or a driver package's own), so it was not imported"
            )
        top = module_name.split(".")[0]
        owners = [d for d in _distributions_of(top) if not _requires_jumpstarter(d)]
        if owners:  # installed, by a package that forgot to say it is a driver package
            dist = owners[0].metadata["Name"]
            raise ClientClassError(
                f"{where}: the exporter names client class {path!r}; module {top!r} is installed (distribution "
                f"{dist!r}), but that distribution does not depend on jumpstarter, and only driver packages' "
                f'client classes are loaded. Add dependencies = ["jumpstarter"] to its pyproject.toml and '
                f"reinstall it, or allow the module with {ENV_VAR}={top}."
            )
        raise ClientClassError(
            f"{where}: the exporter names client class {path!r}, but module {top!r} is not "
            f"from an installed driver package (a distribution that depends on jumpstarter), so it was not "
            f"imported. Install the driver package on this side too, or allow the module with "
            f"{ENV_VAR}={top} or jumpstarter.client.allow_client_modules()."
        )
    try:
        cls = import_class(path)
    except ModuleMissing as exc:
        raise ClientClassError(f"{where}: can't import client class {path!r}: {exc.__cause__}{misfit(path)}") from exc
    except ImportFailed as exc:  # a module that fails, or exits, on import: not the client's end
        if isinstance(exc.cause, ImportError):
            raise ClientClassError(
                f"{where}: can't import client class {path!r}: {exc.cause}{misfit(path)}"
            ) from exc.cause
        raise ClientClassError(
            f"{where}: importing module {module_name!r} for client class {path!r} failed: "
            f"{type(exc.cause).__name__}: {exc.cause}{misfit(path)}"
        ) from None
    except NameMissing:
        raise ClientClassError(
            f"{where}: module {module_name!r} has no client class {class_name!r}{misfit(path)}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ClientClassError(f"{where}: {path!r} is not a DriverClient subclass, so it is not used as a client")
    return cls
