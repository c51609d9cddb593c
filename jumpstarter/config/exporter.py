"""Upstream's names for exporter configs: ``ExporterConfigV1Alpha1`` (a whole ExporterConfig, found by name in
upstream's folders) and ``ExporterConfigV1Alpha1DriverInstance`` (one ``export:`` entry; upstream's doctests
build a driver from one). Both are read and checked by our loader; these classes only give upstream's API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

import jumpstarter.config.refs as refs
from jumpstarter.config.hooks import Hooks
from jumpstarter.config.loader import (
    ConfigNotFound,
    DriverEntry,
    ExporterConfig,
    LineLoader,
    Parser,
    build_driver,
    read_config,
)
from jumpstarter.driver.base import Driver
from jumpstarter.errors import ConfigError

__all__ = [
    "ExporterConfigListV1Alpha1",
    "ExporterConfigV1Alpha1",
    "ExporterConfigV1Alpha1DriverInstance",
]


@dataclass
class ExporterConfigV1Alpha1DriverInstance:
    """One ``export:`` entry (``type``, ``config``, ``children``, or ``ref``), checked as our ExporterConfig
    checks it. A ``ref`` below it names a path from its own children, as upstream's Proxy resolves it from the
    driver it is served under."""

    entry: DriverEntry
    source: str = "<string>"

    @classmethod
    def from_str(cls, text: str, source: str = "<string>") -> ExporterConfigV1Alpha1DriverInstance:
        try:
            node = yaml.load(text, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        entry = Parser(source).entry("driver", "driver", node, 1)
        if entry.ref is not None:
            raise ConfigError(f"{source}:{entry.line}: a 'ref' needs a tree around it; this entry is all there is")
        refs.resolve(entry.children, source)
        return cls(entry, source)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> ExporterConfigV1Alpha1DriverInstance:
        return cls.from_str(read_config(Path(path)), str(path))

    def instantiate(self) -> Driver:
        return build_driver(self.entry, self.source, [])


def _user_config_home() -> Path:
    """Upstream's CONFIG_PATH: $JMP_CLIENT_CONFIG_HOME, else $XDG_CONFIG_HOME/jumpstarter (~/.config/...)."""
    if home := os.environ.get("JMP_CLIENT_CONFIG_HOME"):
        return Path(home)
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "jumpstarter"


@dataclass
class ExporterConfigMetadata:
    """An ExporterConfig's ``metadata``."""

    name: str = ""
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ExporterConfigV1Alpha1:
    """A whole ExporterConfig, as upstream's code reaches for it: ``load(name)`` finds ``NAME.yaml`` in
    ``BASE_PATH`` (the user's folder) and then ``SYSTEM_CONFIG_PATH`` (``/etc/jumpstarter/exporters``), as
    upstream 0.9.0's ``jmp run --exporter NAME`` does; ``load_path(path)`` reads one file; ``list()`` all of
    both folders. ``config`` is our parsed ExporterConfig; ``instantiate()`` makes its drivers."""

    BASE_PATH: ClassVar[Path] = _user_config_home() / "exporters"
    SYSTEM_CONFIG_PATH: ClassVar[Path] = Path("/etc/jumpstarter/exporters")

    config: ExporterConfig
    alias: str = "default"
    path: Path | None = None
    apiVersion: str = "jumpstarter.dev/v1alpha1"  # noqa: N815 (upstream's field names)
    kind: str = "ExporterConfig"
    metadata: ExporterConfigMetadata = field(default_factory=ExporterConfigMetadata)

    @property
    def export(self) -> dict[str, DriverEntry]:
        return self.config.export

    @property
    def endpoint(self) -> str | None:
        return self.config.endpoint or None

    @property
    def token(self) -> str | None:
        return self.config.token or None

    @property
    def hooks(self) -> Hooks:
        return self.config.hooks

    def instantiate(self) -> Driver:
        """The root driver (a Composite of the ``export:`` entries)."""
        return self.config.instantiate()

    @classmethod
    def validate_alias(cls, alias: str) -> None:
        if not alias or alias in (".", "..") or "/" in alias or "\\" in alias:
            raise ConfigError(f"exporter name {alias!r}: a name has no path separators and is not '.' or '..'")

    @classmethod
    def resolve_path(cls, alias: str) -> Path:
        """Where ``load(alias)`` reads: the user's folder's file, else the system's, else (neither exists) the
        user's."""
        cls.validate_alias(alias)
        user = Path(cls.BASE_PATH) / f"{alias}.yaml"
        system = Path(cls.SYSTEM_CONFIG_PATH) / f"{alias}.yaml"
        return system if not user.exists() and system.exists() else user

    @classmethod
    def exists(cls, alias: str) -> bool:
        return cls.resolve_path(alias).exists()

    @classmethod
    def load_path(cls, path: str | os.PathLike[str]) -> ExporterConfigV1Alpha1:
        path = Path(path)
        config = ExporterConfig.load(path)
        meta = ExporterConfigMetadata(config.name, config.namespace, dict(config.labels))
        return cls(config=config, path=path, metadata=meta)

    @classmethod
    def find(cls, alias: str) -> Path:
        """The file ``load(alias)`` reads; ConfigNotFound naming both places when neither has it."""
        path = cls.resolve_path(alias)
        if not path.exists():
            raise ConfigNotFound(
                f"no exporter config {alias!r}: neither {Path(cls.BASE_PATH) / f'{alias}.yaml'} nor "
                f"{Path(cls.SYSTEM_CONFIG_PATH) / f'{alias}.yaml'} exists"
            )
        return path

    @classmethod
    def load(cls, alias: str) -> ExporterConfigV1Alpha1:
        loaded = cls.load_path(cls.find(alias))
        loaded.alias = alias
        return loaded

    @classmethod
    def list(cls) -> ExporterConfigListV1Alpha1:
        """The configs of both folders (``NAME.yaml``), the user's shadowing the system's of the same name."""
        names: dict[str, None] = {}
        for folder in (Path(cls.BASE_PATH), Path(cls.SYSTEM_CONFIG_PATH)):
            if folder.is_dir():
                names.update((p.stem, None) for p in sorted(folder.iterdir()) if p.suffix == ".yaml")
        return ExporterConfigListV1Alpha1([cls.load(name) for name in names])


@dataclass
class ExporterConfigListV1Alpha1:
    """What ``ExporterConfigV1Alpha1.list()`` gives: the configs, in ``items``."""

    items: list[ExporterConfigV1Alpha1]
    apiVersion: str = "jumpstarter.dev/v1alpha1"  # noqa: N815 (upstream's field names)
    kind: str = "ExporterConfigList"
