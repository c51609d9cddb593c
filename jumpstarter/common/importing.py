"""Importing a class named by a dotted path: the one mechanism behind driver types (an ExporterConfig's
``type:``) and client classes (an exporter's report). Each caller says in its own words what went wrong, from
the kind of failure raised here; what may be imported at all is the caller's to check first."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class ImportProblem(Exception):
    """Why ``import_class`` found no class; the subclasses say which step failed."""

    def __init__(self, path: str, module: str = "", name: str = "") -> None:
        super().__init__(path)
        self.path, self.module, self.name = path, module, name


class NotAClassPath(ImportProblem):
    """The path is not of the form ``module.Class``."""


class ModuleMissing(ImportProblem):
    """The module, or one it imports (``missing``), is not installed."""

    def __init__(self, path: str, module: str, missing: str) -> None:
        super().__init__(path, module)
        self.missing = missing

    @property
    def is_the_module(self) -> bool:
        """Whether it is the named module (or a package above it) that is missing, not one it needs."""
        return self.module == self.missing or self.module.startswith(self.missing + ".")


class ImportFailed(ImportProblem):
    """Importing the module raised (or exited): ``cause`` says how."""

    def __init__(self, path: str, module: str, cause: BaseException) -> None:
        super().__init__(path, module)
        self.cause = cause


class NameMissing(ImportProblem):
    """The module has no such name; ``found`` is the module, to look for what was meant."""

    def __init__(self, path: str, module: str, name: str, found: ModuleType) -> None:
        super().__init__(path, module, name)
        self.found = found


def split_class_path(path: str) -> tuple[str, str]:
    """``("pkg.mod", "Class")`` for ``"pkg.mod.Class"``; NotAClassPath when either part is missing."""
    module, _, name = path.rpartition(".")
    if not module or not name:
        raise NotAClassPath(path)
    return module, name


def import_class(path: str) -> Any:
    """The object at ``path``, importing its module; an ImportProblem says which step failed."""
    module_name, name = split_class_path(path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ModuleMissing(path, module_name, exc.name or module_name) from exc
    except (Exception, SystemExit) as exc:  # a module that fails, or exits, on import: a program, not a library
        raise ImportFailed(path, module_name, exc) from exc
    found = getattr(module, name, None)
    if found is None:
        raise NameMissing(path, module_name, name, module)
    return found
