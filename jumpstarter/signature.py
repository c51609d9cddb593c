"""Check and convert the decoded arguments of an exported method.

JSON-like values lose Python types on the wire (an ``int`` may arrive as
``20000.0`` from an upstream client). Where a parameter is annotated we convert
to the annotated type, or refuse the call with a message naming the method and
the parameter; unannotated parameters take the value as it came.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jumpstarter.values import MAX_EXACT_INT

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class ArgumentError(ValueError):
    """A call whose arguments don't fit the method (reported as INVALID_ARGUMENT)."""


class Signature:
    """What an exported method accepts, prepared once when the driver is built."""

    def __init__(self, func: Callable[..., Any], name: str) -> None:
        self.name = name
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable forward references: convert nothing
            hints = {}
        params = list(inspect.signature(func).parameters.values())
        if params and params[0].name == "self":
            params = params[1:]
        self.positional = [p for p in params if p.kind in _POSITIONAL]
        self.required = sum(p.default is inspect.Parameter.empty for p in self.positional)
        self.variadic = next((p for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
        self.types = [hints.get(p.name, Any) for p in self.positional]
        self.rest_type = hints.get(self.variadic.name, Any) if self.variadic else Any
        self.needs_conversion = any(t is not Any for t in (*self.types, self.rest_type))

    def describe(self) -> str:
        names = [p.name for p in self.positional] + ([f"*{self.variadic.name}"] if self.variadic else [])
        return f"{self.name}({', '.join(names)})"

    def bind(self, args: list[Any]) -> list[Any]:
        """The arguments to call with, converted; ArgumentError if they don't fit."""
        n = len(args)
        if n < self.required:
            missing = ", ".join(repr(p.name) for p in self.positional[n : self.required])
            raise ArgumentError(f"{self.describe()}: missing argument {missing} (got {n} of {self.required})")
        if n > len(self.positional) and not self.variadic:
            most = "" if self.required == len(self.positional) else "at most "
            raise ArgumentError(f"{self.describe()} takes {most}{len(self.positional)} arguments, got {n}")
        if not self.needs_conversion:
            return args
        out = []
        for i, arg in enumerate(args):
            if i < len(self.positional):
                tp, pname = self.types[i], self.positional[i].name
            else:
                assert self.variadic is not None  # more arguments than positional parameters: checked above
                tp, pname = self.rest_type, f"{self.variadic.name}[{i - len(self.positional)}]"
            try:
                out.append(convert(arg, tp))
            except ArgumentError as e:
                raise ArgumentError(f"{self.describe()}: argument {pname!r} {e}") from None
            except (TypeError, ValueError, OverflowError) as e:  # a value no check foresaw: the caller's, not ours
                why = f"can't be made {_name(tp)} from {type(arg).__name__} {arg!r:.60}: {e}"
                raise ArgumentError(f"{self.describe()}: argument {pname!r} {why}") from None
        return out


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


RESOURCE_KINDS = ("client_stream", "presigned_request")  # the handles Driver.resource() takes


def _fail(value: Any, tp: Any) -> ArgumentError:
    return ArgumentError(f"must be {_name(tp)}, got {type(value).__name__} {value!r:.60}")


def convert(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp``, or ArgumentError saying why not."""
    if tp is Any or tp is object or isinstance(tp, typing.TypeVar):
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return convert(value, typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(value, tp)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ArgumentError(f"must be one of {typing.get_args(tp)!r}, got {value!r:.60}")
    if tp is None or tp is type(None):
        if value is None:
            return None
        raise _fail(value, "None")
    if origin is not None:
        return _convert_generic(value, tp, origin)
    if not isinstance(tp, type):
        return value  # NewType, ParamSpec and other exotica: no check
    if tp is bool:
        if type(value) is bool:
            return value
        raise _fail(value, tp)
    if tp is int:
        if type(value) is int:
            return value
        if type(value) is float and value.is_integer() and abs(value) <= MAX_EXACT_INT:
            return int(value)
        raise _fail(value, tp)
    if tp is float:
        if type(value) in (float, int):
            return float(value)
        raise _fail(value, tp)
    if issubclass(tp, enum.Enum):
        try:
            return tp(convert(value, type(next(iter(tp)).value)) if len(tp) else value)
        except (ValueError, ArgumentError):
            raise ArgumentError(f"must be one of {[m.value for m in tp]!r}, got {value!r:.60}") from None
    if tp in (bytes, bytearray):
        if isinstance(value, (bytes, bytearray)):
            return tp(value)
        if isinstance(value, str):  # bytes travel as UTF-8 text (see jumpstarter.values)
            return tp(value.encode())
        raise _fail(value, tp)
    if tp is str and isinstance(value, dict) and value.get("kind") in RESOURCE_KINDS:
        return value  # upstream's drivers annotate resource handles as str; clients send them as objects
    if tp in (list, tuple, dict, str, set, frozenset):
        return _convert_generic(value, tp, tp)
    return value  # a class we can't build from JSON-like data (a TypedDict, a model): leave it to the method


def _convert_union(value: Any, tp: Any) -> Any:
    members = typing.get_args(tp)
    # Prefer a member the value already is, so that 2.0 stays a float in int | float.
    for member in members:
        if isinstance(member, type) and type(value) is member:
            return value
    for member in members:
        try:
            return convert(value, member)
        except ArgumentError:
            pass
    raise ArgumentError(f"must be {_name(tp)}, got {type(value).__name__} {value!r:.60}")


def _convert_generic(value: Any, tp: Any, origin: Any) -> Any:
    args = typing.get_args(tp)
    if origin is str:
        if isinstance(value, str):
            return value
        raise _fail(value, tp)
    if origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        if not isinstance(value, dict):
            raise _fail(value, tp)
        if not args:
            return value
        key_t, val_t = args
        return {convert(k, key_t): _item(v, val_t, repr(k)) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(value, tp)
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_item(v, args[0], str(i)) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ArgumentError(f"must be {_name(tp)} of {len(args)} items, got {len(value)}")
        return tuple(_item(v, t, str(i)) for i, (v, t) in enumerate(zip(value, args, strict=True)))
    if origin in (list, set, frozenset) or (isinstance(origin, type) and issubclass(origin, Sequence)):
        if not isinstance(value, (list, tuple)):
            raise _fail(value, tp)
        items = [_item(v, args[0], str(i)) for i, v in enumerate(value)] if args else list(value)
        if origin not in (set, frozenset):
            return items
        try:
            return origin(items)
        except TypeError:  # a list or dict among the items
            raise ArgumentError(f"must be {_name(tp)}, got items that can't be in a set (lists or dicts)") from None
    return value


def _item(value: Any, tp: Any, where: str) -> Any:
    try:
        return convert(value, tp)
    except ArgumentError as e:
        raise ArgumentError(f"item [{where}] {e}") from None
