"""Set-up checks: turn silent mistakes into errors before a test runs: a mock keyword no fixture of the test
uses, an export name misspelt, a child's name used as an export's."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from jumpstarter.common.hints import closest
from pytest_jumpstarter.leasing import MOCK_MARKER, fixture_definitions

if TYPE_CHECKING:
    from pytest_jumpstarter.lab import Lab


class SetupChecks:
    """``names``: the export names that have a fixture (Fixtures.names, which grows as fixtures are added)."""

    def __init__(self, lab: Lab, names: set[str]) -> None:
        self.lab, self.names = lab, names

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self._check_mocks(item)
        self._check_names(item)

    def _check_mocks(self, item: pytest.Item) -> None:
        """Every jumpstarter_mock keyword of a test names an export it uses, or a driver below one: a mock
        that would be ignored (and the real driver driven instead) is an error."""
        used = set(getattr(item, "fixturenames", ()))
        for node, marker in item.iter_markers_with_node(MOCK_MARKER):
            if node is not item:  # a module's or class's mock applies to those of its tests that use it
                continue
            for key in marker.kwargs:
                if key.split(".")[0] in used:
                    continue
                below = self._paths_ending(key)
                hint = f"; to mock a child, name its path: {', '.join(below)}" if below else ""
                exports = sorted(used & self.names) or ["none"]
                pytest.fail(
                    f"@pytest.mark.{MOCK_MARKER}({key}=...): this test uses no export {key!r}{hint} "
                    f"(the exports it uses: {', '.join(exports)})",
                    pytrace=False,
                )

    def _check_names(self, item: pytest.Item) -> None:
        """A fixture nobody defines whose name is close to an export's, or is a child's: say which export.
        Any other unknown name is left to pytest's own "fixture not found", with its list."""
        provided = self.lab.provided()
        if not provided:
            return  # no exporters: pytest's error stands, and the report adds a hint (reporting.py)
        for name in getattr(item, "fixturenames", ()):
            if name == "request" or fixture_definitions(item, name):
                continue
            below = self._paths_ending(name)
            close = closest(name, provided)
            if not below and close is None:
                continue
            where = "; ".join(f"{e.name}: {', '.join(e.exports) or 'none'}" for e in self.lab.exporters)
            if below:
                pytest.fail(
                    f"{name!r} is not an export but a child of one: use {' or '.join(below)} (exports: {where})",
                    pytrace=False,
                )
            pytest.fail(f"no exporter provides export {name!r}; did you mean {close!r}? (exports: {where})", False)

    def _paths_ending(self, name: str) -> list[str]:
        """The paths of drivers below the exports whose own name is ``name`` ("power": "board.power")."""
        return sorted({path for e in self.lab.exporters for path in e.descendants if path.endswith(f".{name}")})
