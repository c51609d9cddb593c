"""Upstream's names for building drivers from YAML (their doctests build one driver from a YAML entry)."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from jumpstarter.config.loader import DriverEntry, LineLoader, Parser, build_driver
from jumpstarter.driver.base import Driver
from jumpstarter.errors import ConfigError

__all__ = ["ExporterConfigV1Alpha1DriverInstance"]


@dataclass
class ExporterConfigV1Alpha1DriverInstance:
    """One ``export:`` entry (``type``, ``config``, ``children``), checked as our ExporterConfig checks it."""

    entry: DriverEntry
    source: str = "<string>"

    @classmethod
    def from_str(cls, text: str, source: str = "<string>") -> ExporterConfigV1Alpha1DriverInstance:
        try:
            node = yaml.load(text, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        return cls(Parser(source).entry("driver", "driver", node, 1), source)

    def instantiate(self) -> Driver:
        return build_driver(self.entry, self.source, [])
