"""An ExporterConfig's ``hooks:``: upstream's beforeLease / afterLease scripts, checked key by key.

Upstream 0.9.0's HookInstanceConfigV1Alpha1 has ``script``, ``exec`` (the interpreter), ``timeout`` (seconds,
default 120) and ``onFailure`` (warn, endLease or exit, default warn). Each mistake is an error naming file and
line, as every other key of the config's; the exporter runs the hooks (jumpstarter.exporter.hooks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jumpstarter.common.hints import did_you_mean
from jumpstarter.errors import ConfigError

HOOK_NAMES = ("beforeLease", "afterLease")
HOOK_KEYS = ("script", "exec", "timeout", "onFailure")
ON_FAILURE = ("warn", "endLease", "exit")
DEFAULT_TIMEOUT = 120  # seconds, as upstream's
MAX_TIMEOUT = 24 * 3600


@dataclass(frozen=True)
class HookSpec:
    """One hook: what to run, with what, for how long at most, and what a failure does."""

    name: str  # "beforeLease" or "afterLease"
    script: str  # inline shell text, or the path of a script file
    exec: str | None = None  # the interpreter; None: by the file's extension, else /bin/sh
    timeout: float = DEFAULT_TIMEOUT
    on_failure: str = "warn"
    line: int = 0  # where the config has it


@dataclass(frozen=True)
class Hooks:
    """A config's hooks (either may be None)."""

    before_lease: HookSpec | None = None
    after_lease: HookSpec | None = None

    def __bool__(self) -> bool:
        return self.before_lease is not None or self.after_lease is not None


def parse_hooks(node: Any, line: int, error: Callable[[int, str], ConfigError]) -> Hooks:
    """``hooks:`` (a mapping with beforeLease, afterLease) at ``line``; ``error(line, message)`` makes the error."""
    if node is None:
        return Hooks()
    lines = getattr(node, "lines", {})
    if not isinstance(node, dict):
        raise error(line, f"'hooks' must be a mapping with {' and/or '.join(HOOK_NAMES)}, not {_kind(node)}")
    specs: dict[str, HookSpec | None] = {}
    for key, value in node.items():
        where = lines.get(key, line)
        if key not in HOOK_NAMES:
            hint = did_you_mean(str(key), set(HOOK_NAMES)) or f"; known keys: {', '.join(HOOK_NAMES)}"
            raise error(where, f"hooks: unknown key {key!r}{hint}")
        specs[key] = None if value is None else _hook(key, value, where, error)
    return Hooks(specs.get("beforeLease"), specs.get("afterLease"))


def _hook(name: str, node: Any, line: int, error: Callable[[int, str], ConfigError]) -> HookSpec:
    where = f"hooks.{name}"
    if not isinstance(node, dict):
        raise error(line, f"{where} must be a mapping with 'script' (and exec, timeout, onFailure), not {_kind(node)}")
    lines = getattr(node, "lines", {})
    for key in node:
        if key not in HOOK_KEYS:
            hint = did_you_mean(str(key), set(HOOK_KEYS)) or f"; known keys: {', '.join(HOOK_KEYS)}"
            raise error(lines.get(key, line), f"{where}: unknown key {key!r}{hint}")
    if "script" not in node:
        raise error(line, f"{where}: missing 'script' (shell text, or the path of a script file)")
    script = node["script"]
    if not isinstance(script, str) or not script.strip():
        raise error(lines.get("script", line), f"{where}.script must be a non-empty string, not {_kind(script)}")
    interpreter = node.get("exec")
    if interpreter is not None and (not isinstance(interpreter, str) or not interpreter.strip()):
        raise error(
            lines.get("exec", line), f"{where}.exec must be an interpreter (a string), not {_kind(interpreter)}"
        )
    timeout = node.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
        raise error(
            lines.get("timeout", line),
            f"{where}.timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT}, not {timeout!r}",
        )
    on_failure = node.get("onFailure", "warn")
    if on_failure not in ON_FAILURE:
        hint = did_you_mean(str(on_failure), set(ON_FAILURE)) if isinstance(on_failure, str) else ""
        raise error(
            lines.get("onFailure", line),
            f"{where}.onFailure must be one of {', '.join(ON_FAILURE)}, not {on_failure!r}{hint}",
        )
    return HookSpec(name, script, interpreter, float(timeout), on_failure, line)


def _kind(value: Any) -> str:
    return (
        "nothing"
        if value is None
        else repr(value)
        if isinstance(value, (str, int, float))
        else f"a {type(value).__name__}"
    )
