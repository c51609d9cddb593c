"""Keep labgrid's own pytest plugin out of runs that don't use it.

Installing ``jumpstarter[labgrid]`` installs labgrid, whose ``pytest11`` entry point loads its plugin into every
run: it adds fixtures (``env``, ``target``, ``strategy``), changes the default ``log_format``, restyles the
logging plugin's handlers, and prints ``current_level: ...`` at ``-vv``. A run uses it when it names it: an
``--lg-*`` option, ``LG_ENV``, or ``-p labgrid``. Any other run gets it unregistered before it configures,
and its fixtures (parsed as it registered) dropped as the session starts: a test asking for ``target`` gets
"fixture not found", as it would without labgrid installed, not labgrid's skip.
"""

from __future__ import annotations

import os
import sys

import pytest

NAME = "labgrid"  # its entry point's name
LOG_FORMAT = "%(levelname)-8s %(name)s:%(filename)s:%(lineno)d %(message)s"  # pytest's default, which it replaces


def wanted(args: list[str]) -> bool:
    """Whether the command line or environment asks for labgrid's plugin."""
    if os.environ.get("LG_ENV"):
        return True
    words = [*args, *os.environ.get("PYTEST_ADDOPTS", "").split()]
    pairs = zip(words, [*words[1:], ""], strict=False)
    return any(w.startswith("--lg-") or w == f"-p{NAME}" or (w == "-p" and nxt == NAME) for w, nxt in pairs)


def block_early(manager: pytest.PytestPluginManager) -> None:
    """Before it is even imported, when this plugin's entry point comes first: importing labgrid takes 0.5 s
    (seconds on a loaded machine, its modules' asserts rewritten). The command line is sys.argv here; a
    ``-p labgrid`` has loaded it already (pytest reads -p before entry points)."""
    if manager.get_plugin(NAME) is None and not wanted(sys.argv[1:]):
        manager.set_blocked(NAME)


def keep_out(config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """When it was loaded all the same (its entry point came first): unregister it before it configures."""
    manager = config.pluginmanager
    plugin = manager.get_plugin(NAME)
    if plugin is None or wanted(args):
        return
    manager.unregister(plugin)
    manager.set_blocked(NAME)
    parser.addini("log_format", "default value for log_format", default=LOG_FORMAT)  # pytest's again
    manager.register(_DropFixtures(), "jumpstarter-labgrid-fixtures-out")


class _DropFixtures:
    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """pytest has no public API to forget a plugin's fixtures: its fixture manager's tables, here only
        (pytest >= 9.2 keeps them per node, older ones per name)."""
        manager = getattr(session, "_fixturemanager", None)
        per_node = getattr(manager, "_arg2node2fixturedefs", None)
        tables = list(per_node.values()) if isinstance(per_node, dict) else []
        if not tables and isinstance(getattr(manager, "_arg2fixturedefs", None), dict):
            tables = [manager._arg2fixturedefs]  # type: ignore[union-attr]
        for table in tables:
            for key, definitions in list(table.items()):
                kept = [d for d in definitions if not getattr(d.func, "__module__", "").startswith(f"{NAME}.")]
                if kept:
                    table[key] = kept
                else:
                    del table[key]
