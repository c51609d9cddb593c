"""The "did you mean" of every error message that names something unknown: one wording, one closeness."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def closest(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice closest to ``name`` (difflib's ratio of at least ``cutoff``), or None."""
    import difflib  # only errors need it: not imported at every start-up

    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def did_you_mean(name: str, choices: Iterable[str], show: Callable[[str], str] = repr) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to ``name``, or ``""`` when none is close."""
    match = closest(name, choices)
    return f"; did you mean {show(match)}?" if match is not None else ""
