"""Load every ExporterConfig under a folder with the loader of the jumpstarter this Python has (upstream's or
ours), importing each driver class it names; print JSON: the file's path (relative) -> null, or why it was
refused. Run by tests/test_upstream_configs.py in .venv-drivers-upstream and in .venv-drivers.

Upstream's side: ``ExporterConfigV1Alpha1.load_path`` (pydantic's validation of the document), then each
entry's ``type`` imported as its ``instantiate()`` imports it. Ours: ``ExporterConfig.load`` and ``check()``
(the classes imported and the entries' config checked against them). Neither makes a driver: that would touch
hardware.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def upstream_load(path: Path) -> None:
    from jumpstarter.common.importlib import import_class  # type: ignore[import-not-found]

    from jumpstarter.config.exporter import ExporterConfigV1Alpha1

    def visit(instance: Any) -> None:
        root = instance.root
        if getattr(root, "type", None):
            import_class(root.type, [], True)
        for child in getattr(root, "children", {}).values():
            visit(child)

    config = ExporterConfigV1Alpha1.load_path(path)
    for instance in config.export.values():
        visit(instance)


def our_load(path: Path) -> None:
    from jumpstarter.config import ExporterConfig

    ExporterConfig.load(path).check()


def main(folder: Path) -> None:
    from importlib.metadata import version

    ours = "+hil" in version("jumpstarter")  # ours is 0.9.0+hil.N, upstream's 0.9.0
    load = our_load if ours else upstream_load
    results: dict[str, str | None] = {}
    for path in sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml")):
        try:
            load(path)
            results[str(path.relative_to(folder))] = None
        except Exception as exc:  # any refusal: its kind and first line
            results[str(path.relative_to(folder))] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    print(json.dumps({"side": "ours" if ours else "upstream", "results": results}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
