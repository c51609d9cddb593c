"""Upstream Jumpstarter's exception classes, under its module name, for drivers that raise or catch them.

Drivers raise ``ConfigurationError`` from their constructors and ``ArgumentError`` for bad input; clients
catch ``JumpstarterException``. The classes keep upstream's hierarchy (their ``ConnectionError`` is not the
builtin one; their ``FileNotFoundError`` is both) so ``except`` clauses written for upstream behave the same.
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

__all__ = [
    "ArgumentError",
    "ConfigurationError",
    "ConnectionError",
    "EnvironmentVariableNotSetError",
    "ExporterOfflineError",
    "ExporterUnreachableError",
    "FileNotFoundError",
    "JumpstarterException",
    "MissingDriverError",
    "ReauthenticationFailed",
]

_RED, _RESET = "\033[91m", "\033[0m"


class JumpstarterException(Exception):
    """Base of upstream's own errors; meant to be subclassed, not raised as is.

    ``raise SomeError("what failed") from exc`` reads as ``what failed (Caused by: <exc>)``, so a chained
    error says why without the caller formatting the cause into the message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self._config: Any = None

    def __str__(self) -> str:
        if self.__cause__ is not None:
            return f"{self.message} (Caused by: {self.__cause__})"
        return f"{self.message}"

    def set_config(self, config: Any) -> None:
        """Attach the configuration that led to the error, so a handler can retry or re-authenticate with it."""
        self._config = config

    def get_config(self) -> Any:
        """The configuration attached with ``set_config()``, or None."""
        return self._config

    def print(self, message: str | None = None) -> None:
        """Show the error in red on stderr, as upstream's CLI does (``message`` is accepted and unused, as there)."""
        print(f"{_RED}{self}{_RESET}", file=sys.stderr)


class ConnectionError(JumpstarterException):  # shadows the builtin, as upstream's does
    """A connection to a Jumpstarter service failed."""


class ExporterOfflineError(ConnectionError):
    """The exporter went away during a lease."""


class ExporterUnreachableError(JumpstarterException):
    """The exporter did not answer the first probe; the lease should be released and acquired again."""


class ConfigurationError(JumpstarterException):
    """A configuration (a driver's arguments, a config file) can't be used."""


class ArgumentError(JumpstarterException):
    """A command-line or call argument is not valid."""


class FileNotFoundError(JumpstarterException, builtins.FileNotFoundError):  # shadows the builtin, as upstream's does
    """A file is missing; also the builtin FileNotFoundError, so ``except FileNotFoundError`` catches it."""


class ReauthenticationFailed(JumpstarterException):
    """Getting a new token failed."""


class EnvironmentVariableNotSetError(JumpstarterException):
    """A required environment variable is not set."""


class MissingDriverError(JumpstarterException):
    """A driver's client class can't be imported; the caller may go on with a stub client instead.

    ``class_path`` is the dotted name that failed to import.
    """

    def __init__(self, message: str, class_path: str) -> None:
        super().__init__(message)
        self.class_path = class_path

    def __reduce__(self) -> tuple[Any, ...]:
        # the default would call cls(message) and miss class_path
        return (type(self), (self.message, self.class_path), self.__dict__)
