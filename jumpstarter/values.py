"""Python data <-> ``google.protobuf.Value``, keeping integers exact.

A protobuf Value carries every number as a double. Upstream Jumpstarter lets
``20000`` arrive as ``20000.0``; we record where the integers stood (``IntPaths``,
a field upstream peers ignore) and turn them back into ints on the other side.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from google.protobuf.struct_pb2 import NULL_VALUE, ListValue, Value

from jumpstarter.v1.jumpstarter_pb2 import IntPaths

Path = tuple[str | int, ...]

# Integers beyond this can't round-trip through a double.
MAX_EXACT_INT = 2**53

# How deep lists and dicts may nest in a value sent either way (an argument or a result): protobuf's parser takes
# 100 levels of messages, and a dict costs three of them (a list two), so 32 levels of any mix arrive whole. A
# deeper value is refused where it is sent, naming where the 33rd level stands, instead of failing to parse on the
# other side ("Exception deserializing response!").
MAX_DEPTH = 32

CARRIED = "None, bool, int, float, str, UTF-8 bytes, list, tuple, set and dict with str keys"


class ValueTypeError(TypeError):
    """A value that a protobuf Value can't carry, and where it stood."""

    hint = f"; protobuf values carry {CARRIED}"

    def __init__(self, what: str, path: Path, of: str = "value") -> None:
        self.what, self.path = what, path
        super().__init__(f"{_where(of, path)}: {what}{self.hint}")


class ValueDepthError(ValueTypeError):
    """A value whose lists and dicts nest deeper than ``MAX_DEPTH``."""

    hint = ""


class MalformedValue(ValueError):
    """A received message whose values can't be what a peer sends (a bad ``int_paths`` step)."""


def _where(of: str, path: Path) -> str:
    """``argument 1[0]['key']``: the place of a value in messages, its first steps only when it is deep."""
    steps = [f"[{p!r:.40}]" for p in path[:8]]
    return of + "".join(steps) + ("..." if len(path) > 8 else "")


def _too_deep(path: Path) -> ValueDepthError:
    return ValueDepthError(
        f"value nests deeper than {MAX_DEPTH} levels of lists and dicts, the most that travels "
        "(jumpstarter.values.MAX_DEPTH)",
        path,
    )


def encode(obj: Any, value: Value, ints: list[Path], path: Path = (), depth: int = MAX_DEPTH) -> None:
    """Fill ``value`` from ``obj``, appending the path of every int to ``ints``. A list or dict found ``depth``
    steps down the path is one level too many (ValueDepthError)."""
    if obj is None:
        value.null_value = NULL_VALUE
    elif obj is True or obj is False:
        value.bool_value = obj
    elif isinstance(obj, str):
        value.string_value = obj
    elif isinstance(obj, int):
        if isinstance(obj, enum.Enum):
            return encode(obj.value, value, ints, path, depth)
        if abs(obj) > MAX_EXACT_INT:
            raise ValueTypeError(f"integer {obj} is too large to travel exactly (limit 2**53)", path)
        value.number_value = obj
        ints.append(path)
    elif isinstance(obj, float):
        value.number_value = obj
    elif isinstance(obj, (list, tuple, set, frozenset)):  # a set arrives as a list, as upstream sends it
        if len(path) >= depth:
            raise _too_deep(path)
        items = value.list_value.values
        if not obj:
            value.list_value.SetInParent()
        for i, item in enumerate(obj):
            encode(item, items.add(), ints, (*path, i), depth)
    elif isinstance(obj, Mapping):
        if len(path) >= depth:
            raise _too_deep(path)
        fields = value.struct_value.fields
        if not obj:
            value.struct_value.SetInParent()
        for key, item in obj.items():
            if not isinstance(key, str):
                raise ValueTypeError(f"dict key {key!r:.60} is {type(key).__name__}, not str", path)
            encode(item, fields[key], ints, (*path, key), depth)
    elif isinstance(obj, enum.Enum):
        encode(obj.value, value, ints, path, depth)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        # As upstream sends bytes: UTF-8 text (a driver parameter annotated bytes turns it back). Binary that
        # isn't UTF-8 would reach the other side changed, or not at all: refused here, pointing to streams.
        try:
            value.string_value = bytes(obj).decode()
        except UnicodeDecodeError as exc:
            bad = f"byte {exc.start} is {bytes(obj)[exc.start]:#04x}"
            raise ValueTypeError(
                f"{type(obj).__name__} value that isn't UTF-8 text can't be sent ({bad}); "
                "use @exportstream or a resource stream for binary data",
                path,
            ) from None
    elif isinstance(obj, UUID):  # sent as its text, as upstream sends it
        value.string_value = str(obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        encode({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, value, ints, path, depth)
    elif callable(getattr(obj, "model_dump", None)):  # pydantic models, as upstream drivers return
        encode(obj.model_dump(mode="json"), value, ints, path, depth)
    else:
        raise ValueTypeError(f"{type(obj).__name__} can't be sent", path)


def decode(value: Value) -> Any:
    """The Python object a Value holds (numbers as float, see ``restore_ints``)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "list_value":
        return [decode(v) for v in value.list_value.values]
    if kind == "struct_value":
        return {k: decode(v) for k, v in value.struct_value.fields.items()}
    return None


def pack_paths(paths: Iterable[Path], into: IntPaths) -> None:
    for path in paths:
        encoded = into.paths.add()
        for step in path:
            encoded.values.add().CopyFrom(_step(step))


def _step(step: str | int) -> Value:
    return Value(string_value=step) if isinstance(step, str) else Value(number_value=step)


def restore_ints(root: Any, paths: Iterable[ListValue]) -> Any:
    """Turn the floats at ``paths`` back into ints; returns the (maybe new) root.

    Paths that don't lead to an integral float (within 2**53) are ignored: a
    peer's mistake must not turn good data into bad. A step that is neither a
    key nor an index is MalformedValue.
    """
    for n, path in enumerate(paths):
        steps = [_path_step(v, n) for v in path.values]
        if not steps:
            if _integral(root):
                root = int(root)
            continue
        parent = root
        try:
            for step in steps[:-1]:
                parent = parent[step]
            leaf = parent[steps[-1]]
        except (LookupError, TypeError):
            continue
        if _integral(leaf):
            parent[steps[-1]] = int(leaf)
    return root


def _path_step(step: Value, n: int) -> str | int:
    """A step of an ``int_paths`` path: a dict key, or a list index (a whole number, as a double)."""
    kind = step.WhichOneof("kind")
    if kind == "string_value":
        return step.string_value
    number = step.number_value
    if kind == "number_value" and math.isfinite(number) and number.is_integer() and number >= 0:
        return int(number)
    shown = repr(number) if kind == "number_value" else (kind or "an empty value")
    raise MalformedValue(f"int_paths: path {n + 1} has a step {shown}, neither a list index nor a dict key")


def _integral(x: Any) -> bool:
    return type(x) is float and math.isfinite(x) and x.is_integer() and abs(x) <= MAX_EXACT_INT


def encode_args(args: tuple[Any, ...], into: Any) -> None:
    """Fill a DriverCallRequest-like message's ``args`` and ``int_paths``."""
    ints: list[Path] = []
    out = into.args
    for i, arg in enumerate(args):
        try:
            encode(arg, out.add(), ints, (i,), MAX_DEPTH + 1)  # the path's first step is the argument's index
        except ValueTypeError as e:
            raise type(e)(e.what, e.path[1:], of=f"argument {i + 1}") from None
    if ints:
        pack_paths(ints, into.int_paths)


def decode_args(request: Any) -> list[Any]:
    args = [decode(v) for v in request.args]
    if request.HasField("int_paths"):
        args = restore_ints(args, request.int_paths.paths)
    return args


def encode_result(obj: Any, into: Any) -> None:
    """Fill a DriverCallResponse-like message's ``result`` and ``int_paths``."""
    ints: list[Path] = []
    encode(obj, into.result, ints)
    if ints:
        pack_paths(ints, into.int_paths)


def decode_result(response: Any) -> Any:
    result = decode(response.result)
    if response.HasField("int_paths"):
        result = restore_ints(result, response.int_paths.paths)
    return result
