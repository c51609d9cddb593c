"""Secrets out of recordings, which are committed to git; and replay's matching of what was redacted.

At record time, each test's steps are redacted before they leave the test (docs/record-replay.md, "What a
recording keeps secret"): in arguments, results, generator items and error messages, whatever
``jumpstarter.common.secrets`` knows to carry a credential (a URL's query and userinfo, Authorization and
Bearer/Basic/Token values, the text values of keys named like secrets), the exporter's address and passphrase
wherever they appear, and the arguments a test declares secret with
``@pytest.mark.jumpstarter_secret("board.login:1", "board.set_key")``.
Byte-stream traffic is kept as it was (replay compares it byte for byte).

At replay, a recorded value holding ``[REDACTED]`` matches whatever the test passes there: ``[REDACTED]`` alone
matches any value, and inside text it matches any run of characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import pytest

from jumpstarter.common.secrets import REDACTED, is_secret_key, redact

MARKER = "jumpstarter_secret"
MARKER_HELP = (
    f"{MARKER}(*calls): arguments not to write in recordings: 'board.login' (all its arguments) or "
    "'board.login:1' (its argument 1, counting from 0)"
)

Declared = dict[str, set[int] | None]  # a call ("board.login") -> the positions of its secret arguments, or all


def declared(item: pytest.Item) -> Declared:
    """The secret arguments ``item``'s ``jumpstarter_secret`` markers name; a clear error for a malformed one."""
    calls: Declared = {}
    for marker in item.iter_markers(MARKER):
        for spec in marker.args:
            call, colon, position = str(spec).partition(":")
            if not call or (colon and not position.isdigit()):
                pytest.fail(
                    f"{item.nodeid}: @pytest.mark.{MARKER}({spec!r}): name a call ('board.login') or one of its "
                    "arguments by position ('board.login:1')",
                    pytrace=False,
                )
            if not colon:
                calls[call] = None
            elif calls.get(call, set()) is not None:
                calls.setdefault(call, set()).add(int(position))  # type: ignore[union-attr]
    return calls


def redact_steps(steps: list[dict], secrets: Iterable[str] = (), calls: Declared | None = None) -> None:
    """Redact a test's recorded ``steps`` in place (see the module's docstring)."""
    secrets = tuple(s for s in secrets if s)
    calls = calls or {}
    for step in steps:
        what = str(step.get("call", step.get("generate", "")))
        if "args" in step:
            secret = calls.get(what, set())
            step["args"] = [
                REDACTED if secret is None or index in secret else _value(arg, secrets)
                for index, arg in enumerate(step["args"])
            ]
        if "result" in step:
            step["result"] = _value(step["result"], secrets)
        if "items" in step:
            step["items"] = [_value(item, secrets) for item in step["items"]]
        _error(step.get("error"), secrets)
        for item in step.get("traffic", ()):
            if isinstance(item, dict):
                _error(item.get("error"), secrets)


def matches(recorded: Any, got: Any) -> bool:
    """Whether ``got`` is what was recorded, a redacted part matching anything (see the module's docstring)."""
    if isinstance(recorded, str) and REDACTED in recorded:
        return recorded == REDACTED or (isinstance(got, str) and _pattern(recorded).fullmatch(got) is not None)
    if isinstance(recorded, list) and isinstance(got, list):
        return len(recorded) == len(got) and all(matches(r, g) for r, g in zip(recorded, got, strict=True))
    if isinstance(recorded, dict) and isinstance(got, dict):
        return recorded.keys() == got.keys() and all(matches(recorded[k], got[k]) for k in recorded)
    return bool(recorded == got)


@lru_cache(maxsize=256)
def _pattern(recorded: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in recorded.split(REDACTED)), re.DOTALL)


def _value(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_value(v, secrets) for v in value]
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(v, str) and isinstance(k, str) and is_secret_key(k) else _value(v, secrets)
            for k, v in value.items()
        }
    return value


def _error(error: Any, secrets: tuple[str, ...]) -> None:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error["message"] = redact(error["message"], secrets)
