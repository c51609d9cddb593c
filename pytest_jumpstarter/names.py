"""The fixture name of each export: the export's own name where it is a Python identifier, else that name with
every other character made ``_`` (``dut-network`` gives ``dut_network``), as a test's parameter must be one."""

from __future__ import annotations

import keyword
import re

from jumpstarter.errors import ConfigError


def fixture_name(export: str) -> str:
    """``dut-network`` -> ``dut_network``; ``2nd-board`` -> ``_2nd_board``; an identifier stays as it is."""
    if export.isidentifier() and not keyword.iskeyword(export):
        return export
    name = re.sub(r"\W", "_", export)
    return f"_{name}" if name[:1].isdigit() or keyword.iskeyword(name) else name


def fixture_names(exports: list[str], where: str) -> dict[str, str]:
    """Fixture name -> export name for an exporter's exports; two exports with one fixture name are an error
    naming both (``where``: the exporter)."""
    found: dict[str, str] = {}
    for export in exports:
        name = fixture_name(export)
        if name in found:
            raise ConfigError(
                f"{where}: exports {found[name]!r} and {export!r} would both be the pytest fixture {name!r}; "
                "rename one of them"
            )
        found[name] = export
    return found
