"""Load an ExporterConfig YAML into a driver tree, with errors that say file and line."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import pkgutil
import re
import sys
import threading
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import jumpstarter.config.refs as refs
from jumpstarter.common.hints import closest, did_you_mean
from jumpstarter.common.importing import ImportFailed, ModuleMissing, NameMissing, NotAClassPath, import_class
from jumpstarter.config.hooks import Hooks, parse_hooks
from jumpstarter.driver.base import Composite, Driver, close_drivers, exported_methods
from jumpstarter.errors import ConfigError
from jumpstarter.installed import driver_requirement, misfit
from jumpstarter.signature import ArgumentError, convert

API_VERSION = "jumpstarter.dev/v1alpha1"
KIND = "ExporterConfig"
# Upstream keys we accept. tls and grpcOptions configure upstream's controller connection, failureDetection
# its restart loop (both ignored here); hooks are run by the exporter (jumpstarter.config.hooks).
TOP_KEYS = {
    *("apiVersion", "kind", "metadata", "endpoint", "token", "tls", "grpcOptions", "export", "description"),
    *("hooks", "failureDetection"),
}
ENTRY_KEYS = {"type", "config", "children", "ref", "description", "methods_description", "labels"}
METADATA_KEYS = {"name", "namespace", "labels"}
# Upstream's driver classes that ours stand in for.
TYPE_ALIASES: dict[str, type[Driver]] = {"jumpstarter_driver_composite.driver.Composite": Composite}
RESERVED_PARAMS = {"children", "uuid"}
logger = logging.getLogger(__name__)


class _Node(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int = 0
    lines: dict[Any, int]


class LineLoader(yaml.SafeLoader):
    """YAML's safe loader, whose mappings remember the line of each key."""


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> _Node:
    loader.flatten_mapping(node)
    mapping = _Node()
    mapping.line = node.start_mark.line + 1
    mapping.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {mapping.lines[key]})", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass
class DriverEntry:
    """One driver of the tree as the YAML describes it."""

    path: str  # dotted export path, e.g. "custom" or "custom.power"
    line: int
    type: str
    config: dict[str, Any] = field(default_factory=dict)
    children: dict[str, DriverEntry] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    methods_description: dict[str, str] = field(default_factory=dict)
    config_lines: dict[str, int] = field(default_factory=dict)  # line of each config key
    ref: str | None = None  # upstream's proxy: this path is the driver at ``ref`` (type, config unused)
    target: DriverEntry | None = field(default=None, repr=False)  # the entry ``ref`` names (refs.resolve)


@dataclass
class ExporterConfig:
    """A parsed ExporterConfig. ``instantiate()`` builds the drivers."""

    source: str  # file path, or "<string>"
    export: dict[str, DriverEntry]
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    namespace: str | None = None
    endpoint: str = ""
    token: str = ""
    warnings: list[str] = field(default_factory=list)
    hooks: Hooks = field(default_factory=Hooks)

    @classmethod
    def load(cls, path: str | Path) -> ExporterConfig:
        return cls.parse(read_config(Path(path)), str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> ExporterConfig:
        try:
            doc = yaml.load(text, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
            raise ConfigError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        return Parser(source).config(doc)

    def check(self) -> None:
        """Import every driver class and check its config parameters, without building drivers.

        Catches what a user gets wrong in the YAML before anything touches hardware.
        """

        for entry in refs.walk(self.export):
            if entry.ref is None:
                where = f"{self.source}:{entry.line}: export {entry.path!r}"
                _check_params(import_driver_class(entry.type, where), entry, where, self.source)

    def instantiate(self, stop: threading.Event | None = None) -> Driver:
        """The root driver: a Composite whose children are the ``export:`` entries. Once ``stop`` is set (SIGTERM
        while slow drivers are made), no other driver is made: BuildStopped, and those made are closed."""
        built: list[Driver] = []
        try:
            builder = Builder(self.source, built, stop)
            children = {name: builder.build(entry) for name, entry in self.export.items()}
            _check_stop(stop, "serving")
            return Composite(children=children, labels=dict(self.labels))
        except BaseException:
            _close_built(built)  # don't leave hardware open when a later entry fails, or the exporter is stopped
            raise


class ConfigNotFound(ConfigError, FileNotFoundError):
    """No such config file (a FileNotFoundError too, as upstream's loader raises)."""


def read_config(path: Path) -> str:
    """The text of a config file, or a ConfigError saying why it can't be read."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigNotFound(f"{path}: no such exporter config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: can't read it: {exc.strerror}") from None


class BuildStopped(Exception):
    """Making the drivers was stopped before all were made."""


def _check_stop(stop: threading.Event | None, before: str) -> None:
    if stop is not None and stop.is_set():
        raise BuildStopped(f"stopped before {before}")


def _close_built(built: list[Driver]) -> None:
    """Close the drivers made so far: each that no other made driver holds as a child, with its children (each
    failure logged)."""
    children = {id(child) for driver in built for child in driver.children.values()}
    for driver in built:
        if id(driver) not in children:
            close_drivers(driver)


class Parser:
    """An ExporterConfig document (or one ``export:`` entry) checked key by key into ``ExporterConfig``/``DriverEntry``,
    each mistake a ConfigError naming file and line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def error(self, line: int, message: str) -> ConfigError:
        return ConfigError(f"{self.source}:{line}: {message}" if line else f"{self.source}: {message}")

    def config(self, doc: Any) -> ExporterConfig:
        if not isinstance(doc, _Node):
            what = "empty" if doc is None else f"a {type(doc).__name__}"
            raise self.error(1, f"an ExporterConfig is a YAML mapping, but this document is {what}")
        self.check_keys(doc, TOP_KEYS, "the top level")
        for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
            if key not in doc:
                raise self.error(doc.line, f"missing {key!r} (expected {expected!r})")
            if doc[key] != expected:
                raise self.error(doc.lines[key], f"{key} is {doc[key]!r}, expected {expected!r}")
        meta = doc.get("metadata") or {}
        if not isinstance(meta, dict):
            raise self.error(doc.lines["metadata"], "'metadata' must be a mapping (name, namespace, labels)")
        if meta:
            self.check_keys(meta, METADATA_KEYS, "metadata")
        labels = self.string_map(meta.get("labels"), "metadata.labels", getattr(meta, "lines", {}).get("labels", 0))
        hooks = parse_hooks(doc.get("hooks"), doc.lines.get("hooks", 0), self.error)
        if "failureDetection" in doc:
            self.warnings.append(
                f"{self.source}: 'failureDetection' configures upstream's restart loop; it is ignored here"
            )
        endpoint, token = (self.string(doc, key) for key in ("endpoint", "token"))
        if endpoint or token:
            self.warnings.append(
                f"{self.source}: 'endpoint' and 'token' name a Jumpstarter controller; this runtime serves clients "
                "directly (jumpstarter run --listen) and does not register with a controller, so they are ignored"
            )
        export = doc.get("export")
        if export is None:
            raise self.error(doc.line, "missing 'export' (a mapping of export names to drivers)")
        if not isinstance(export, _Node):
            raise self.error(doc.lines["export"], "'export' must be a mapping of export names to drivers")
        entries = {name: self.entry(name, str(name), value, export.lines[name]) for name, value in export.items()}
        refs.resolve(entries, self.source)
        return ExporterConfig(
            source=self.source,
            export=entries,
            name=str(meta.get("name", "") or ""),
            namespace=None if meta.get("namespace") is None else str(meta["namespace"]),
            labels=labels,
            endpoint=endpoint,
            token=token,
            warnings=self.warnings,
            hooks=hooks,
        )

    def entry(self, name: Any, path: str, node: Any, line: int) -> DriverEntry:
        where = f"export {path!r}"
        if not isinstance(name, str) or not name or "." in name:
            raise self.error(line, f"{where}: an export name is a non-empty string without '.' (it is a path step)")
        if not isinstance(node, _Node):
            raise self.error(line, f"{where}: expected a mapping with 'type' (and 'config', 'children'), or 'ref'")
        self.check_keys(node, ENTRY_KEYS, where)
        if "ref" in node:
            return self.ref_entry(path, node, where)
        children_node = node.get("children") or _Node()
        if not isinstance(children_node, _Node):
            raise self.error(node.lines["children"], f"{where}: 'children' must be a mapping")
        children = {
            cname: self.entry(cname, f"{path}.{cname}", value, children_node.lines[cname])
            for cname, value in children_node.items()
        }
        if "type" in node:
            type_path = node["type"]
            if not isinstance(type_path, str) or not type_path.strip():
                raise self.error(node.lines["type"], f"{where}: 'type' must be the import path of a Driver class")
            type_line = node.lines["type"]
        elif children:
            type_path, type_line = "jumpstarter.driver.Composite", node.line
        else:
            raise self.error(line, f"{where}: missing 'type' (the import path of the driver class)")
        config = node.get("config") or {}
        if not isinstance(config, dict):
            raise self.error(node.lines["config"], f"{where}: 'config' must be a mapping of parameter names to values")
        config_lines = dict(getattr(config, "lines", {}))
        for key in config:
            if isinstance(key, bool):  # YAML 1.1 reads on/off/yes/no as booleans
                raise self.error(
                    config_lines.get(key, node.line),
                    f"{where} config: key {key} is a boolean in YAML; quote it ('on', 'off', 'yes', 'no')",
                )
        return DriverEntry(
            path=path,
            line=type_line,
            type=type_path.strip(),
            config=dict(config),
            config_lines={str(k): v for k, v in config_lines.items()},
            children=children,
            labels=self.string_map(node.get("labels"), f"{where} labels", node.lines.get("labels", node.line)),
            description=node.get("description"),
            methods_description=self.string_map(
                node.get("methods_description"),
                f"{where} methods_description",
                node.lines.get("methods_description", node.line),
            ),
        )

    def ref_entry(self, path: str, node: _Node, where: str) -> DriverEntry:
        """``{ref: "a.b"}``: upstream's Proxy, which has nothing but its ref."""
        others = [key for key in node if key != "ref"]
        if others:
            raise self.error(
                node.lines[others[0]],
                f"{where}: a 'ref' entry stands for the driver it names and takes no {others[0]!r} of its own",
            )
        ref = node["ref"]
        if not isinstance(ref, str):
            raise self.error(node.lines["ref"], f"{where}: 'ref' must be a dotted path, e.g. 'board.power'")
        return DriverEntry(path=path, line=node.lines["ref"], type="", ref=ref.strip())

    def check_keys(self, node: Mapping[Any, Any], allowed: set[str], where: str) -> None:
        for key in node:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed) or f"; known keys: {', '.join(sorted(allowed))}"
                raise self.error(getattr(node, "lines", {}).get(key, 0), f"{where}: unknown key {key!r}{hint}")

    def string(self, doc: _Node, key: str) -> str:
        value = doc.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(doc.lines[key], f"{key!r} must be a string")
        return value

    def string_map(self, value: Any, where: str, line: int) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(line, f"{where} must be a mapping of strings")
        for key in value:
            if isinstance(key, bool):  # YAML 1.1 reads on/off/yes/no as booleans: a Power driver's `on:` bites
                raise self.error(line, f"{where}: key {key} is a boolean in YAML; quote it ('on', 'off', 'yes', 'no')")
            if not isinstance(key, str):
                raise self.error(line, f"{where}: key {key!r} is a {type(key).__name__}; keys must be strings")
        return {k: str(v) for k, v in value.items()}


class Builder:
    """Makes the drivers of entries, each once: a ref's target is made when first needed (by the ref or in its
    own place), and the ref's place gets that same driver."""

    def __init__(self, source: str, built: list[Driver], stop: threading.Event | None = None) -> None:
        self.source, self.built, self.stop = source, built, stop
        self.made: dict[int, Driver] = {}  # id(entry) -> its driver

    def build(self, entry: DriverEntry) -> Driver:
        if entry.target is not None:
            entry = entry.target
        elif entry.ref is not None:
            raise ConfigError(f"{self.source}:{entry.line}: export {entry.path!r}: ref {entry.ref!r} is not resolved")
        if id(entry) not in self.made:
            self.made[id(entry)] = build_driver(entry, self.source, self.built, self.stop, self)
        return self.made[id(entry)]


def build_driver(
    entry: DriverEntry,
    source: str,
    built: list[Driver],
    stop: threading.Event | None = None,
    builder: Builder | None = None,
) -> Driver:
    """The driver of ``entry`` and of its children (made through ``builder``, so that refs share drivers)."""
    builder = builder or Builder(source, built, stop)
    where = f"{source}:{entry.line}: export {entry.path!r}"
    _check_stop(stop, f"making {entry.path!r}")
    cls = import_driver_class(entry.type, where)
    _check_params(cls, entry, where, source)
    children = {name: builder.build(child) for name, child in entry.children.items()}
    extra: dict[str, Any] = {}
    if entry.labels:
        extra["labels"] = entry.labels
    if entry.description:
        extra["description"] = entry.description
    if entry.methods_description:
        extra["methods_description"] = entry.methods_description
    try:
        driver = cls(**entry.config, **extra, children=children)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: {cls.__qualname__}(...) failed: {type(exc).__name__}: {exc}") from exc
    built.append(driver)
    return driver


def _check_params(cls: type[Driver], entry: DriverEntry, where: str, source: str) -> None:
    params = inspect.signature(cls).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    takes = sorted(n for n in params if n not in RESERVED_PARAMS | {"labels", "description", "methods_description"})
    for name in entry.config:
        if name in RESERVED_PARAMS:
            raise ConfigError(f"{where}: {name!r} can't be a config parameter")
        if name not in params and not accepts_any:
            hint = did_you_mean(str(name), takes)
            own = set(cls.__dict__.get("__annotations__", {}))
            if name in own:
                hint = f"; {cls.__qualname__} declares it but is not a dataclass: add @dataclass(kw_only=True)"
            raise ConfigError(
                f"{where}: unknown config parameter {name!r} for {cls.__qualname__} "
                f"(it takes: {', '.join(takes) or 'none'}){hint}"
            )
    exported = exported_methods(cls)
    for name in entry.methods_description:
        if name not in exported:
            raise ConfigError(
                f"{where}: methods_description names {name!r}, which {cls.__qualname__} does not export "
                f"(it exports: {', '.join(sorted(exported)) or 'nothing'})"
            )
    for name, param in params.items():
        if param.default is inspect.Parameter.empty and param.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            if name not in entry.config and name not in RESERVED_PARAMS:
                raise ConfigError(f"{where}: missing config parameter {name!r} for {cls.__qualname__}")
    _check_values(cls, entry, source)


def _check_values(cls: type[Driver], entry: DriverEntry, source: str) -> None:
    """Config values checked (and converted: 1 for a float) against the fields' annotations, as a call's
    arguments are: a mistake is named with its line now, not met later inside a test. Drivers declared with
    pydantic's dataclass decorator (as upstream's are) validate their own fields, with pydantic's rules."""
    if hasattr(cls, "__pydantic_fields__") or not dataclasses.is_dataclass(cls):
        return
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that can't be resolved here: leave the values to the driver
        return
    for name, value in list(entry.config.items()):
        if name not in hints:
            continue
        try:
            entry.config[name] = convert(value, hints[name])
        except ArgumentError as exc:
            line = entry.config_lines.get(name, entry.line)
            flag = _boolean_key(value, line)
            if flag is not None:  # a shell driver's `methods: {on: ...}`: the key, not the value, is wrong
                key, key_line = flag
                raise ConfigError(
                    f"{source}:{key_line}: export {entry.path!r}: config {name!r} of {cls.__qualname__}: key "
                    f"{key} is a boolean in YAML (YAML 1.1 reads on/off/yes/no as true/false); quote it: "
                    f"'{_key_word(source, key_line, key)}':"
                ) from None
            raise ConfigError(
                f"{source}:{line}: export {entry.path!r}: config {name!r} of {cls.__qualname__} {exc}"
            ) from None


def _key_word(source: str, line: int, key: bool) -> str:
    """The word the YAML wrote for a boolean key (``on``, ``yes``...), read from its line."""
    try:
        text = Path(source).read_text().splitlines()[line - 1]
    except (OSError, IndexError, UnicodeDecodeError):
        text = ""
    match = re.match(r"\s*(?:-\s+)?([A-Za-z]+)\s*:", text)
    return match.group(1) if match else ("on" if key else "off")


def _boolean_key(value: Any, line: int) -> tuple[bool, int] | None:
    """The first boolean key in a config value's mappings (at any depth) and its line."""
    if isinstance(value, dict):
        for key, item in value.items():
            lines = getattr(value, "lines", {})
            if isinstance(key, bool):
                return key, lines.get(key, line)
            found = _boolean_key(item, lines.get(key, line))
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _boolean_key(item, line)
            if found is not None:
                return found
    return None


def import_driver_class(path: str, where: str) -> type[Driver]:
    """The Driver subclass at ``path``, or a ConfigError that says what is wrong and what was meant."""
    if path in TYPE_ALIASES:
        return TYPE_ALIASES[path]
    try:
        cls = import_class(path)
    except NotAClassPath:
        raise ConfigError(f"{where}: type {path!r} must be a full import path, e.g. 'my_driver.MyDriver'") from None
    except ModuleMissing as exc:
        if exc.is_the_module:
            hint = _suggest_module(path, exc.missing)
            raise ConfigError(f"{where}: type {path!r}: no module named {exc.missing!r}{hint}") from None
        raise ConfigError(
            f"{where}: type {path!r}: importing {exc.module!r} failed: "
            f"it needs module {exc.missing!r}, which is not installed{misfit(path)}"
        ) from exc
    except ImportFailed as exc:
        raise ConfigError(
            f"{where}: type {path!r}: importing {exc.module!r} raised {type(exc.cause).__name__}: {exc.cause}"
            f"{misfit(path)}"
        ) from exc.cause
    except NameMissing as exc:
        drivers = [n for n, v in vars(exc.found).items() if isinstance(v, type) and issubclass(v, Driver)]
        module = exc.module
        hint = did_you_mean(exc.name, drivers, show=lambda name: repr(f"{module}.{name}"))
        raise ConfigError(
            f"{where}: type {path!r}: module {module!r} has no {exc.name!r}{hint}{misfit(path)}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise ConfigError(f"{where}: type {path!r} is not a Driver subclass (from jumpstarter.driver import Driver)")
    why = driver_requirement(path)
    if why and why not in _warned:  # it imported: it may work, but say why if it doesn't
        _warned.add(why)
        logger.warning("%s: %s", where, why)
    return cls


_warned: set[str] = set()


def _suggest_module(path: str, missing: str) -> str:
    """'; did you mean ...' for a missing top-level module, from installed names."""
    top = missing.split(".")[0]
    installed = {m.name for m in pkgutil.iter_modules()} | {m.split(".")[0] for m in sys.modules}
    words = sorted(top.lower().split("_"))
    same_words = [m for m in installed if sorted(m.lower().split("_")) == words]
    close = same_words or [m for m in [closest(top, installed, cutoff=0.75)] if m]
    if not close:
        return " (is the driver package installed on this host?)"
    return f"; did you mean {path.replace(top, close[0], 1)!r}? (installed: {close[0]})"
