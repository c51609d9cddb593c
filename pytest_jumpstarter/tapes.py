"""Recordings of the driver calls tests make: the file format that record and replay share.

One YAML file per test module (``DIR/tests/test_board.yaml`` for ``tests/test_board.py``), written to be read
and diffed: each test's drivers (the client tree its fixtures reached, by path) and its calls, in order. Values
are written as they travel on the wire (protobuf Values: JSON-like); byte-stream traffic as text where it is
UTF-8, else as ``!!binary``. Nothing of the connection (addresses, passphrases, leases) is written, and what
is known to be secret is redacted (``redaction``). Files are read and written without following links, and
checked against the documented shape (``tapeschema``) before replay trusts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from jumpstarter.common.safefiles import read_regular, write_atomic
from jumpstarter.common.wire import CLIENT_LABEL, NAME_LABEL
from jumpstarter.errors import DriverError
from jumpstarter.v1 import jumpstarter_pb2
from jumpstarter.values import decode_args, encode_args
from pytest_jumpstarter.tapeschema import BadRecording, check_tests

VERSION = 1
HEADER = (
    "# Driver calls recorded by `pytest --jumpstarter-record`; `pytest --jumpstarter-replay DIR` answers the\n"
    "# tests' fixtures from them, with no exporter. Re-record rather than edit by hand.\n"
)
MAX_FILE_BYTES = 64 * 1024 * 1024  # a bigger recording file is refused: a module's tests are never that big
# In a byte stream's traffic: a receive was still waiting when the test closed the stream or cancelled it.
PENDING = "pending"
ROOT_CLIENT = "jumpstarter.client.CompositeClient"  # the root of a replayed tree whose test used no root fixture


def file_for(folder: Path, module: Path, nodeid: str) -> Path:
    """The recording file of test module ``module`` (its test ``nodeid``): its path below the recordings folder's
    parent (``tests/recordings/hw/test_boot.yaml`` for ``tests/hw/test_boot.py``), the same whatever rootdir
    pytest picks; a module elsewhere goes by its node id's path."""
    try:
        relative = module.resolve().relative_to(folder.parent)
    except ValueError:
        relative = Path(nodeid.split("::", 1)[0] or "tests")  # no module part: outside the rootdir, under xdist
    parts = ["_up_" if part == ".." else part for part in relative.with_suffix(".yaml").parts]
    return folder.joinpath(*parts)


def test_key(nodeid: str) -> str:
    """A test's key in its module's file: its id without the module's path."""
    return nodeid.split("::", 1)[1] if "::" in nodeid else nodeid


def load(path: Path, inside: Path | None = None) -> dict[str, dict]:
    """The tests recorded in ``path`` (test key -> recording); a clear error for a file that isn't one: OSError
    for one that can't be read (a link, a FIFO, too big: see ``safefiles``), ValueError for one whose content
    isn't a recording of the documented shape. Below ``inside``, no link is followed."""
    try:
        text = read_regular(path, inside, MAX_FILE_BYTES).decode("utf-8")
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader: no Python tags)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a jumpstarter recording: not UTF-8 text ({exc})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not a jumpstarter recording: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path}: not a jumpstarter recording: nested too deep") from None
    if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
        raise ValueError(f"{path}: not a jumpstarter recording (no 'tests' mapping)")
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise ValueError(
            f"{path}: recording version {version}, written by a newer jumpstarter; this one reads version "
            f"{VERSION}: upgrade jumpstarter to replay it"
        )
    if version != VERSION:
        raise ValueError(f"{path}: recording version {version!r}; this jumpstarter reads {VERSION}")
    try:
        check_tests(data["tests"])
    except BadRecording as exc:
        raise ValueError(f"{path}: not a valid recording: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path}: not a valid recording: nested too deep") from None
    return data["tests"]


def problem(path: Path, exc: BaseException) -> str:
    """Why ``path`` can't be used, naming it once."""
    text = str(exc)
    return text if str(path) in text else f"{path}: {text}"


def save(path: Path, tests: dict[str, dict], inside: Path | None = None) -> None:
    """Write ``tests`` (sorted by key: stable for diffs) to ``path``, whole or not at all, never through a link
    (below ``inside``, no linked folder either)."""
    text = yaml.dump(
        {"version": VERSION, "tests": dict(sorted(tests.items()))},
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=120,
    )
    write_atomic(path, (HEADER + text).encode("utf-8"), inside)


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when there: a big file loads 10x faster


class _Dumper(yaml.SafeDumper):
    """Block style, one fact a line; short lists of plain values on one line; no anchors and aliases (a value
    seen twice is written twice: readers need not expand anything)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text.rstrip("\n") and len(text) > 60 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


def _list(dumper: yaml.SafeDumper, items: list) -> yaml.Node:
    """A short list of scalars on one line (``args: [2, 3]``); anything else a line an item."""
    flat = all(isinstance(i, (str, int, float, bool)) or i is None for i in items)
    short = flat and sum(len(str(i)) + 2 for i in items) <= 80 and not any("\n" in str(i) for i in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=short)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(list, _list)
_Dumper.add_representer(tuple, lambda d, t: _list(d, list(t)))


# Values ------------------------------------------------------------------------------------------


def wire_args(args: tuple, aliases: dict[str, str]) -> list[Any]:
    """``args`` as the exporter receives them (the comparison replay makes is on these), with upload handles'
    uuids replaced by their stable names ("upload 1")."""
    request = jumpstarter_pb2.DriverCallRequest()
    encode_args(args, request)
    return plain(decode_args(request), aliases)


def plain(value: Any, aliases: dict[str, str] | None = None) -> Any:
    """A value as written: mappings in key order (a protobuf Struct's order is not stable from run to run, and
    a diff would show it), uuids named by ``aliases``."""
    if isinstance(value, str):
        return aliases.get(value, value) if aliases else value
    if isinstance(value, (list, tuple)):
        return [plain(v, aliases) for v in value]
    if isinstance(value, dict):
        return {k: plain(value[k], aliases) for k in sorted(value, key=str)}
    return value


def data(chunk: bytes) -> str | bytes:
    """A chunk of byte-stream traffic as written: text where it is UTF-8 (readable), else bytes (``!!binary``)."""
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(chunk)


def chunk(written: str | bytes) -> bytes:
    return written.encode("utf-8") if isinstance(written, str) else bytes(written)


def error(exc: BaseException) -> dict[str, str]:
    """A call's error as written: its class's name and the driver's message."""
    message = exc.message if isinstance(exc, DriverError) else str(exc)
    return {"kind": type(exc).__name__, "message": message}


def show(entry: dict) -> str:
    """One recorded step, as a failure message names it: ``dut.power.on(1, 'a')``."""
    for kind in ("call", "generate"):
        if kind in entry:
            args = ", ".join(repr(a) for a in entry.get("args", []))
            return f"{entry[kind]}({args})" + (" [generator]" if kind == "generate" else "")
    if "stream" in entry:
        return f"byte stream {entry['stream']}"
    if "upload" in entry:
        return f"upload to {entry['upload']} ({entry.get('size', '?')} bytes)"
    if "reset" in entry:
        return "reset of every driver"
    return repr(entry)


# Client trees ------------------------------------------------------------------------------------


ROOT_PATH = "."  # the root driver's path as written (its own path is "")
ENV = "env()"  # in a recording's fixtures: the root client jumpstarter.utils.env() gave (upstream-style tests)


def describe(client: Any, uuids: dict[str, str] | None = None) -> dict[str, Any]:
    """The drivers of ``client``'s tree, by path: what replay needs to build the same client classes. A driver
    with no labels and no description is just its client class. A driver met before under another path (a
    ``ref:`` proxy; ``uuids``: uuid -> the first path it was met at, kept across a test's fixtures) says so, as
    ``same``: replay gives both paths one uuid, as the exporter does."""
    drivers: dict[str, Any] = {}
    uuids = {} if uuids is None else uuids

    def walk(node: Any) -> None:
        labels = {k: v for k, v in node.labels.items() if k not in (CLIENT_LABEL, NAME_LABEL)}
        cls = node.labels.get(CLIENT_LABEL, f"{type(node).__module__}.{type(node).__name__}")
        info: dict[str, Any] = {"client": cls}
        if labels:
            info["labels"] = labels
        if node.description:
            info["description"] = node.description
        path = node.name or ROOT_PATH
        if uuids.setdefault(str(node.uuid), path) != path:
            info["same"] = uuids[str(node.uuid)]
        drivers[node.name or ROOT_PATH] = info if len(info) > 1 else cls
        for child in node.children.values():
            walk(child)

    walk(client)
    return drivers


def merge(drivers: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """The drivers of two fixtures' trees, in the exporter's order: a description from the root (the ``exporter``
    fixture's) has every driver in it, so its order is the order of all."""
    if ROOT_PATH in more:
        return {**more, **{path: info for path, info in drivers.items() if path not in more}}
    return {**drivers, **more}


def report(drivers: dict[str, Any]) -> jumpstarter_pb2.GetReportResponse:
    """A report of the recorded tree (uuids named by path), for the client tree builder: each driver followed by
    its subtree, children in the order written (the exporter's). Paths that are one driver (``same``) share a
    uuid, and a subtree comes right after its parent, as in the exporter's report: a parent is the latest
    report with its uuid."""
    response = jumpstarter_pb2.GetReportResponse(uuid="replay:")
    nodes = {"": drivers.get(ROOT_PATH, ROOT_CLIENT)}
    nodes.update((path, info) for path, info in drivers.items() if path != ROOT_PATH)
    below: dict[str, list[str]] = {}
    for path in nodes:
        if path:
            below.setdefault(path.rpartition(".")[0], []).append(path)

    def same(path: str) -> str:
        info = nodes.get(path)
        return info.get("same", path) if isinstance(info, dict) else path

    order: list[str] = []

    def visit(path: str) -> None:
        order.append(path)
        for child in below.get(path, []):
            visit(child)

    visit("")
    placed = set(order)  # a path whose parent wasn't recorded: after the tree, as before
    order += sorted((p for p in nodes if p not in placed), key=lambda path: path.count("."))
    for path in order:
        info = nodes[path]
        info = info if isinstance(info, dict) else {"client": info}
        entry = response.reports.add(uuid=f"replay:{same(path)}")
        if path:
            parent, _, name = path.rpartition(".")
            entry.parent_uuid = f"replay:{same(parent)}"
            entry.labels[NAME_LABEL] = name
        entry.labels.update({k: str(v) for k, v in info.get("labels", {}).items()})
        entry.labels[CLIENT_LABEL] = str(info["client"])
        if info.get("description"):
            entry.description = info["description"]
    return response
