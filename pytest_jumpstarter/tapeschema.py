"""The shape a recording file must have (docs/record-replay.md, "Recording files"), checked before replay trusts it.

A recording may come from a merge, a hand edit or a hostile pull request: each value replay will use is checked
for its type here, so that a damaged file is refused naming the file, the test and the step, instead of failing
deep inside a test run (or allocating what an int where bytes go asks for). Keys this version doesn't know are
allowed: a later version may add some.
"""

from __future__ import annotations

from typing import Any

KINDS = ("call", "generate", "stream", "upload", "reset")  # a step has exactly one of these keys
ENDS = ("done", "stopped")
MAX_NODES = 1_000_000  # values a file may expand to: YAML aliases can make a small file huge


class BadRecording(ValueError):
    """A recording file that doesn't have the documented shape."""


def check_tests(tests: Any) -> None:
    """Refuse ``tests`` (a file's ``tests`` mapping) unless it has the documented shape."""
    _count(tests)
    _mapping(tests, "'tests'")
    for key, test in tests.items():
        where = f"test {key!r}"
        if not isinstance(key, str):
            raise BadRecording(f"{where}: a test's key must be text")
        _mapping(test, where)
        for name in ("fixtures", "drivers", "calls"):
            if name not in test:
                raise BadRecording(f"{where}: no {name!r}")
        _mapping(test["fixtures"], f"{where}: 'fixtures'")
        for fixture, path in test["fixtures"].items():
            _text(fixture, f"{where}: a fixture's name")
            _text(path, f"{where}: fixture {fixture!r}'s driver path")
        _check_drivers(test["drivers"], where)
        if not isinstance(test["calls"], list):
            raise BadRecording(f"{where}: 'calls' must be a list of steps, not {_kind(test['calls'])}")
        for number, step in enumerate(test["calls"], 1):
            _check_step(step, f"{where}, step {number}")


def _check_drivers(drivers: Any, where: str) -> None:
    _mapping(drivers, f"{where}: 'drivers'")
    for path, info in drivers.items():
        here = f"{where}: driver {path!r}"
        _text(path, f"{where}: a driver's path")
        if isinstance(info, str):
            continue
        _mapping(info, here)
        _text(info.get("client"), f"{here}: 'client'")
        labels = info.get("labels", {})
        _mapping(labels, f"{here}: 'labels'")
        for name, value in labels.items():
            if not isinstance(value, (str, int, float, bool)):
                raise BadRecording(f"{here}: label {name!r} must be a plain value, not {_kind(value)}")
        if "description" in info:
            _text(info["description"], f"{here}: 'description'")
        if "same" in info and info["same"] not in drivers:
            raise BadRecording(f"{here}: 'same' must name another recorded driver's path, not {info['same']!r}")


def _check_step(step: Any, where: str) -> None:
    _mapping(step, where)
    kinds = [k for k in KINDS if k in step]
    if len(kinds) != 1:
        raise BadRecording(f"{where}: a step has one of {', '.join(KINDS)}; this one has {len(kinds)}")
    kind = kinds[0]
    _text(step[kind], f"{where}: {kind!r}")
    if "args" in step and not isinstance(step["args"], list):
        raise BadRecording(f"{where}: 'args' must be a list, not {_kind(step['args'])}")
    if "error" in step:
        _check_error(step["error"], f"{where}: 'error'")
    if kind == "generate":
        if not isinstance(step.get("items", []), list):
            raise BadRecording(f"{where}: 'items' must be a list, not {_kind(step['items'])}")
        if step.get("end", "done") not in ENDS:
            raise BadRecording(f"{where}: 'end' must be one of {', '.join(ENDS)}, not {step['end']!r}")
    elif kind == "stream":
        traffic = step.get("traffic", [])
        if not isinstance(traffic, list):
            raise BadRecording(f"{where}: 'traffic' must be a list, not {_kind(traffic)}")
        for number, item in enumerate(traffic, 1):
            _check_traffic(item, f"{where}, traffic item {number}")
    elif kind == "upload":
        for name in ("size", "sha256"):
            if name not in step:
                raise BadRecording(f"{where}: an upload has {name!r}")
        if not isinstance(step["size"], int) or isinstance(step["size"], bool) or step["size"] < 0:
            raise BadRecording(f"{where}: 'size' must be a count of bytes, not {step['size']!r}")
        _text(step["sha256"], f"{where}: 'sha256'")
        if "handle" in step:
            _mapping(step["handle"], f"{where}: 'handle'")
        if "returned" in step:
            _data(step["returned"], f"{where}: 'returned'")


def _check_traffic(item: Any, where: str) -> None:
    if item in ("eof", "end", "pending"):  # "pending": a receive still waited when the stream was closed
        return
    if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in ("send", "receive", "error"):
        raise BadRecording(f"{where}: must be eof, end, pending, or one of send/receive/error, not {_kind(item)}")
    ((name, value),) = item.items()
    if name == "error":
        _check_error(value, where)
    else:
        _data(value, f"{where}: {name!r}")


def _check_error(error: Any, where: str) -> None:
    _mapping(error, where)
    _text(error.get("kind"), f"{where}: 'kind'")
    if "message" in error:
        _text(error["message"], f"{where}: 'message'")


def _mapping(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise BadRecording(f"{where} must be a mapping, not {_kind(value)}")


def _text(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise BadRecording(f"{where} must be text, not {_kind(value)}")


def _data(value: Any, where: str) -> None:
    if not isinstance(value, (str, bytes)):
        raise BadRecording(f"{where} must be text or !!binary bytes, not {_kind(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _count(value: Any) -> None:
    """Refuse a file whose values, with YAML aliases expanded, number more than MAX_NODES (an alias bomb): each
    shared value is counted once per use, but walked once."""
    sizes: dict[int, int] = {}
    keep: list[Any] = []  # keeps the walked values alive, so their ids stay theirs

    def size(node: Any) -> int:
        if not isinstance(node, (list, dict)):
            return 1
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = MAX_NODES + 1  # a value that contains itself expands without end
        keep.append(node)
        children = node.values() if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                break
        sizes[id(node)] = total
        return total

    if size(value) > MAX_NODES:
        raise BadRecording(f"more than {MAX_NODES} values once its aliases are expanded (an alias bomb?)")
