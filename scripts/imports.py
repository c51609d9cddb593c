"""Print the runtime's import graph: which layer imports which, the circles among modules, the largest files.

    python scripts/imports.py

Imports inside ``if TYPE_CHECKING:`` are left out (they don't run). A layer is a subpackage of
``jumpstarter`` (``jumpstarter.client``, ...), ``jumpstarter(top)`` its top-level modules, or the plugin.
Standard library only.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules() -> dict[str, Path]:
    found = {}
    for path in [*ROOT.glob("jumpstarter/**/*.py"), *ROOT.glob("pytest_jumpstarter/*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[:2] == ("jumpstarter", "v1"):
            continue  # generated
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def layer(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "pytest_jumpstarter":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 and (ROOT / "jumpstarter" / parts[1]).is_dir() else "jumpstarter(top)"


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    sys.setrecursionlimit(10_000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def main() -> None:
    known = modules()
    edges = {name: imports(name, path, known) for name, path in known.items()}
    layers: dict[str, set[str]] = defaultdict(set)
    for name, targets in edges.items():
        layers[layer(name)].update(layer(t) for t in targets if layer(t) != layer(name))
    print("layers:")
    for name in sorted(layers):
        print(f"  {name:26} -> {', '.join(sorted(layers[name])) or '-'}")
    print("circles:", "; ".join(" <-> ".join(c) for c in circles(edges)) or "none")
    sizes = sorted(((len(known[m].read_text().splitlines()), m) for m in known), reverse=True)[:8]
    print("largest:", ", ".join(f"{m} {n}" for n, m in sizes))


if __name__ == "__main__":
    main()
