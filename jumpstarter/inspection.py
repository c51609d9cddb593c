"""``jumpstarter inspect ADDRESS``: what a running exporter offers, as a test author needs to see it.

For each driver of the tree: its path (the attribute to reach it: ``board.power``), its client class, its
description, every method the exporter exports (with its help where it has one), and the client class's own
methods with their signatures, which is what a test calls.
"""

from __future__ import annotations

import inspect
from typing import Any

from jumpstarter.client.base import DriverClient, StubDriverClient
from jumpstarter.client.exported import exported_methods
from jumpstarter.common.wire import CLIENT_LABEL

_BASE = set(dir(DriverClient))  # call, streamingcall, stream, reset, ...: every client has them


def describe(root: DriverClient, address: str, labels: dict[str, str]) -> str:
    """The tree below ``root`` (an exporter's root client), a block per driver; ``labels``: the exporter's."""
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    lines = [f"exporter at {address}" + (f" ({shown})" if shown else "")]

    def walk(client: DriverClient, depth: int) -> None:
        indent = "  " * depth
        class_path = client.labels.get(CLIENT_LABEL, f"{type(client).__module__}.{type(client).__qualname__}")
        missing = " (not installed here)" if isinstance(client, StubDriverClient) else ""
        lines.append(f"{indent}{client.name or '(root)'}: {class_path}{missing}")
        if client.description:
            lines.append(f"{indent}  {client.description}")
        exported = exported_methods(client)
        if exported:
            lines.append(f"{indent}  exported methods:")
            for name in exported:
                help_text = _first_line(client.methods_description.get(name, ""))
                lines.append(f"{indent}    {name}: {help_text}" if help_text else f"{indent}    {name}")
        methods = [] if missing else _client_methods(type(client))
        if methods:
            lines.append(f"{indent}  client methods ({type(client).__name__}):")
            lines.extend(f"{indent}    {line}" for line in methods)
        for child in client.children.values():
            walk(child, depth + 1)

    for child in root.children.values() if root.children else (root,):  # serve() of one driver: the root is it
        walk(child, 1)
    return "\n".join(lines)


def _client_methods(cls: type) -> list[str]:
    """``name(signature)  first line of its docstring`` for each public method the class adds to DriverClient."""
    found = []
    for name in sorted(dir(cls)):
        if name.startswith("_") or name in _BASE:
            continue
        member: Any = inspect.getattr_static(cls, name)
        function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
        if not inspect.isfunction(function):
            continue
        try:
            signature = _signature(inspect.signature(function))
        except (TypeError, ValueError):
            signature = "(...)"
        doc = _first_line(inspect.getdoc(function) or "")
        found.append(f"{name}{signature}" + (f"  {doc}" if doc else ""))
    return found


def _signature(signature: inspect.Signature) -> str:
    """``(a: int, b: int = 1) -> int``, without ``self``; annotations as written (postponed ones unquoted)."""

    def shown(annotation: Any) -> str:
        return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    parts = []
    for parameter in list(signature.parameters.values())[1:]:  # self
        text = parameter.name
        if parameter.kind is parameter.VAR_POSITIONAL:
            text = f"*{text}"
        elif parameter.kind is parameter.VAR_KEYWORD:
            text = f"**{text}"
        if parameter.annotation is not parameter.empty:
            text += f": {shown(parameter.annotation)}"
        if parameter.default is not parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    result = "" if signature.return_annotation is signature.empty else f" -> {shown(signature.return_annotation)}"
    return f"({', '.join(parts)}){result}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
