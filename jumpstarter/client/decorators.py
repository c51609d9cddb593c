"""Click helpers for a client's ``cli()``, under upstream Jumpstarter's names.

The exporter's report can carry a description of each driver and of its methods (from the exporter
config or the docstrings). A driver CLI built with these helpers shows those texts as its help, so an
exporter's operator can document a board without touching the driver package. Without them, click's
usual help (``help=`` or the docstring) stays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jumpstarter.extras import missing_extra

try:
    import click
except ModuleNotFoundError as exc:
    raise missing_extra(exc, __name__) from None

__all__ = ["DriverClickGroup", "driver_click_command", "driver_click_group"]


# The ``client`` these helpers take is any object: a DriverClient's ``description`` and ``methods_description``
# are read where it has them, so that a client interface mixin (FlasherClientInterface) can build its CLI too.


def _description(client: object) -> str | None:
    """The driver's description from the report, if it has one (a client need not be a DriverClient)."""
    return getattr(client, "description", None) or None


def driver_click_group(client: object, **kwargs: Any) -> Callable[[Callable[..., Any]], DriverClickGroup]:
    """Decorator making a function the :class:`DriverClickGroup` of ``client``'s CLI.

    Help text, first match wins: the driver's description from the exporter, ``help=``, the docstring.
    The group is named after the function; ``@click.option``/``@click.argument`` above the function
    become the group's parameters, in the order they are written. ``kwargs`` go to the group.
    """

    def decorator(f: Callable[..., Any]) -> DriverClickGroup:
        options = dict(kwargs)
        if options.get("help") is None and f.__doc__:
            options["help"] = f.__doc__.strip()
        if description := _description(client):
            options["help"] = description
        group = DriverClickGroup(client, name=f.__name__, callback=f, **options)
        # click.option/argument stack their params bottom-up on the function; click reverses them too
        group.params = list(reversed(getattr(f, "__click_params__", [])))
        return group

    return decorator


def driver_click_command(client: object, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """``click.command(**kwargs)`` for a client whose CLI is one command, help from the driver's description.

    Without a description, click's own rules apply (``help=``, else the docstring).
    """
    if description := _description(client):
        kwargs["help"] = description
    return click.command(**kwargs)


class DriverClickGroup(click.Group):
    """A click group whose commands take their help from the client's ``methods_description``.

    A command's entry is looked up under its ``name=`` or, failing that, the function's name in lower
    case with ``-`` for ``_`` (``read_file`` -> ``read-file``); an entry found replaces ``help=`` and the
    docstring.
    """

    def __init__(self, client: object, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client

    def command(self, *args: Any, **kwargs: Any) -> Any:
        """``@group.command(...)`` (or bare ``@group.command``) as click's, with the driver's help text."""
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return self.command()(args[0])

        def decorator(f: Callable[..., Any]) -> click.Command:
            options = dict(kwargs)
            name = options.get("name") or (args[0] if args and isinstance(args[0], str) else None)
            key = name or f.__name__.lower().replace("_", "-")
            descriptions = getattr(self.client, "methods_description", None) or {}
            if key in descriptions:
                options["help"] = descriptions[key]
            return super(DriverClickGroup, self).command(*args, **options)(f)

        return decorator
