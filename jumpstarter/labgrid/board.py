"""The ``JumpstarterExporter`` resource: what an exporter of ours tells the coordinator, and reading it back.

Every client of a coordinator can read every resource, so it carries only what finding the board needs:
the address, whether it speaks TLS, its exports and labels. Never the passphrase.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

RESOURCE_CLASS = "JumpstarterExporter"
GROUP = "jumpstarter"  # the resource group our exporters publish in
# labgrid's coordinator takes tag keys that *start* like this; we ask for the whole key to be like it.
TAG_KEY = re.compile(r"[a-z][a-z0-9_]+")
TAG_VALUE = re.compile(r"[A-Za-z0-9_.:+-]*")
# A place name every labgrid tool can take: labgrid-client -p finds places by substring, reads a leading '+' as a
# reservation token and ':' as an alias's namespace; spaces and '/' break its command lines and our tables.
PLACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


class BoardError(ValueError):
    """A place's data that can't be used; the message names the place and what is wrong."""

    transient = False  # it may serve again soon (its exporter restarting), unlike bad data


class Unpublished(BoardError):
    """The place's exporter is not publishing (stopped, or not back yet after the coordinator restarted)."""

    transient = True


@dataclass(frozen=True)
class Board:
    """An exporter of ours as a place of the lab shows it (a place may hold several: a board's power and its
    serial console served from two hosts)."""

    place: str
    address: str
    tls: bool
    exports: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    exporter: str = ""  # the exporter's name at the coordinator (its resource's path)


def params(address: str, tls: bool, exports: list[str], labels: dict[str, str]) -> dict[str, object]:
    """The resource's parameters (simple values only: the coordinator's MapValue)."""
    return {"address": address, "tls": tls, "exports": ",".join(exports), "labels": json.dumps(labels)}


def tags(labels: dict[str, str]) -> dict[str, str]:
    """The labels a labgrid place can carry as tags (keys like ``board``, values without spaces)."""
    return {k: v for k, v in labels.items() if TAG_KEY.fullmatch(k) and TAG_VALUE.fullmatch(v)}


def check_tag(key: str, value: str, where: str) -> None:
    if not TAG_KEY.fullmatch(key):
        raise BoardError(f"{where}: {key!r} can't be a labgrid tag: tags are lower-case letters, digits and _")
    if not TAG_VALUE.fullmatch(value):
        raise BoardError(f"{where}: {key}={value!r} can't be a labgrid tag value (letters, digits, _.:+-)")


def place_name_problem(name: str) -> str | None:
    """Why ``name`` can't name a labgrid place, or None."""
    if PLACE_NAME.fullmatch(name):
        return None
    shown = repr(name) if len(name) <= 70 else f"{name[:60]!r}... ({len(name)} characters)"
    return (
        f"{shown} can't name a labgrid place: give 1 to 63 letters, digits, '_', '.' or '-', starting with a "
        "letter or digit (no spaces, '/', ':' or '+': labgrid-client reads them)"
    )


def disagreement(ours: dict[str, str], theirs: dict[str, str]) -> str:
    """The tags two exporters of one place give different values (``board=rpi4`` vs ``board=rpi5``), or ""."""
    a, b = tags(ours), tags(theirs)
    keys = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    return ", ".join(f"{k}={a[k]} vs {k}={b[k]}" for k in keys)


def read(place: str, values: dict[str, object], exporter: str = "") -> Board:
    """The Board of ``place`` from its resource's parameters; BoardError naming what is wrong."""
    where = f"place {place!r}: its {RESOURCE_CLASS} resource"
    where += f" from {exporter}" if exporter not in ("", place) else ""
    address = values.get("address")
    if not isinstance(address, str) or not _HOST_PORT.fullmatch(address) or int(address.rpartition(":")[2]) > 65535:
        raise BoardError(f"{where} has address {address!r}, which is not HOST:PORT")
    tls = values.get("tls", False)
    if not isinstance(tls, bool):
        raise BoardError(f"{where} has tls {tls!r}, which is not true or false")
    exports = values.get("exports", "")
    if not isinstance(exports, str):
        raise BoardError(f"{where} has exports {exports!r}, which is not a comma-separated list")
    try:
        labels = json.loads(str(values.get("labels") or "{}"))
    except ValueError as exc:
        raise BoardError(f"{where} has labels that are not JSON: {exc}") from None
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BoardError(f"{where} has labels {labels!r}, which is not a mapping of strings")
    return Board(place, address, tls, tuple(n for n in exports.split(",") if n), labels, exporter)
