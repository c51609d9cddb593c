"""The pytest hooks: exporters from --exporter, and a client fixture per export name.

Inert until configured: without exporters nothing heavy is imported and no
fixture is added; a test asking for an unknown fixture gets a hint to pass
--exporter.
"""

from __future__ import annotations

import difflib
import sys
import types
from contextlib import ExitStack
from typing import Any

import pytest

from pytest_jumpstarter import settings

MOCK_MARKER = "jumpstarter_mock"


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MOCK_MARKER}(**exports): serve these Driver instances (or factories of them) in-process under these "
        "export names for this test, instead of the exporters' drivers",
    )
    config.pluginmanager.register(Lab(config), "jumpstarter-lab")


def pytest_report_header(config: pytest.Config) -> list[str]:
    lab: Lab = config.pluginmanager.get_plugin("jumpstarter-lab")
    if not lab.exporters:
        return []
    lines = [f"jumpstarter: exporters from {lab.sources['exporters']}:"]
    for exporter in lab.exporters:
        lines.append(f"  {exporter.describe()}: {', '.join(exporter.exports) or 'no exports'}")
    other = ", ".join(f"{k}={v!r} ({lab.sources[k]})" for k, v in lab.values.items() if k != "exporters")
    return [*lines, f"jumpstarter: {other}"]


class Lab:
    """The session's exporters, their fixtures, and what each test did with them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        for s in settings.SETTINGS:
            key = s.ini.removeprefix("jumpstarter_")
            self.values[key], self.sources[key] = settings.resolve(config, s)
        self.exporters: list = []
        self.by_export: dict[str, Any] = {}
        self.fixture_names: set[str] = set()
        self.calls: list[str] = []
        self._start_errors: dict[int, str] = {}
        if self.values["exporters"]:
            self._load()

    def _load(self) -> None:
        from jumpstarter.errors import JumpstarterError
        from pytest_jumpstarter.lab import AddressExporter, YamlExporter, is_yaml

        mode, passphrase = self.values["mode"], self.values["passphrase"] or None
        if mode not in settings.MODES:
            raise pytest.UsageError(
                f"jumpstarter: mode {mode!r} ({self.sources['mode']}) must be one of {settings.MODES}"
            )
        try:
            timeout = float(self.values["start_timeout"])
        except ValueError:
            raise pytest.UsageError(
                f"jumpstarter: start timeout {self.values['start_timeout']!r} is not a number"
            ) from None
        for spec in self.values["exporters"]:
            try:
                if is_yaml(spec):
                    exporter = YamlExporter(spec, passphrase, mode, timeout)
                else:
                    exporter = AddressExporter(spec, passphrase)
            except (JumpstarterError, OSError) as exc:
                self.close()
                raise pytest.UsageError(f"jumpstarter: --exporter {spec}: {exc}") from None
            exporter.observers.append(self._record)
            self.exporters.append(exporter)
            for name in exporter.exports:
                self.by_export.setdefault(name, exporter)
        fixtures = types.ModuleType("pytest_jumpstarter.exports")
        fixtures.exporter = pytest.fixture(name="exporter")(self._root_fixture)
        self.config.pluginmanager.register(fixtures, "jumpstarter-exports")
        self._add_export_fixtures(list(self.by_export))

    def _add_export_fixtures(self, names: list[str]) -> None:
        fixtures = types.ModuleType(f"pytest_jumpstarter.exports.{'_'.join(names)}")
        for name in names:
            setattr(fixtures, name, pytest.fixture(name=name)(self._export_fixture(name)))
        self.config.pluginmanager.register(fixtures, f"jumpstarter-exports-{'-'.join(names)}")
        self.fixture_names.update(names)

    # Fixtures ------------------------------------------------------------------

    def _export_fixture(self, name: str):
        def export(request: pytest.FixtureRequest):
            return self.client_for(name, request)

        source = self.by_export[name].describe() if name in self.by_export else f"@pytest.mark.{MOCK_MARKER}"
        export.__doc__ = f"client of export {name!r} ({source})"
        return export

    def _root_fixture(self, request: pytest.FixtureRequest):
        """The root client of the first exporter (children: its exports)."""
        return self._root(self.exporters[0], request)

    def client_for(self, name: str, request: pytest.FixtureRequest):
        mocked = self._mock(name, request)
        if mocked is not None:
            return mocked
        if name not in self.by_export:
            pytest.fail(f"export {name!r} is only mocked ({MOCK_MARKER}) for other tests; this one has no mock", False)
        return getattr(self._root(self.by_export[name], request), name)

    def _root(self, exporter, request: pytest.FixtureRequest):
        from jumpstarter.errors import JumpstarterError
        from jumpstarter.exporter.process import ExporterStartError

        key = id(exporter)
        if key not in self._start_errors:  # a start that failed once is not retried by every test
            died = exporter.failure()
            if died:
                pytest.fail(died, pytrace=False)
            try:
                root = exporter.client()
            except (ExporterStartError, JumpstarterError, OSError) as exc:
                self._start_errors[key] = f"jumpstarter: {exc}"
        if key in self._start_errors:  # failing outside the except: no chained traceback in the report
            pytest.fail(self._start_errors[key], pytrace=False)
        request.node.user_properties.append(("jumpstarter_exporter", exporter.spec))
        item_logs = request.node.stash.setdefault(_LOGS, {})
        item_logs.setdefault(exporter, exporter.log_position)
        return root

    def _mock(self, name: str, request: pytest.FixtureRequest):
        for marker in request.node.iter_markers(MOCK_MARKER):
            if name in marker.kwargs:
                from jumpstarter.common.utils import serve
                from jumpstarter.driver import Driver

                driver = marker.kwargs[name]
                driver = driver if isinstance(driver, Driver) else driver()
                stack = ExitStack()
                client = stack.enter_context(serve(driver))
                request.addfinalizer(stack.close)
                client.connection.observers.append(self._record)
                return client
        return None

    # Hooks -----------------------------------------------------------------------

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Export names that only mocks provide get fixtures too (a test may mock without any exporter)."""
        mocked = {name for item in items for m in item.iter_markers(MOCK_MARKER) for name in m.kwargs}
        new = sorted(mocked - self.fixture_names)
        if new:
            self._add_export_fixtures(new)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.calls = []
        info = getattr(item, "_fixtureinfo", None)
        manager = getattr(item.session, "_fixturemanager", None)
        if info is None or manager is None:
            return
        for name in info.names_closure:
            if name == "request" or name in info.name2fixturedefs or manager.getfixturedefs(name, item):
                continue
            provided = sorted(self.by_export)
            if not provided:
                if any(item.iter_markers(MOCK_MARKER)):
                    continue
                return  # pytest's own "fixture not found" stands; see pytest_runtest_makereport
            close = difflib.get_close_matches(name, provided, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = "; ".join(f"{e.spec}: {', '.join(e.exports) or 'none'}" for e in self.exporters)
            pytest.fail(f"no exporter provides export {name!r}{hint} (exports: {where})", pytrace=False)

    def _record(self, target: str, method: str, args: tuple, outcome: Any, seconds: float) -> None:
        shown = ", ".join(_short(a) for a in args)
        result = (
            f"raised {type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else _short(outcome)
        )
        line = f"{target + '.' if target else ''}{method}({shown}) -> {result}  [{seconds * 1e3:.1f} ms]"
        self.calls.append(line)
        if self.values["log"] or self.config.get_verbosity() > 0:
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"jumpstarter: {line}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        if report.failed:
            if self.calls and call.when == "call":
                report.sections.append(("jumpstarter calls", "\n".join(self.calls)))
            for exporter, since in item.stash.get(_LOGS, {}).items():
                text = exporter.output(since)
                if text:
                    report.sections.append((f"exporter {exporter.spec} log", text))
            if not self.exporters and call.excinfo is not None and getattr(call.excinfo.value, "argname", None):
                report.sections.append(
                    (
                        "jumpstarter",
                        "no exporter is configured: if the missing fixture is an export, pass "
                        "--exporter YAML|ADDRESS (or set jumpstarter_exporters / JUMPSTARTER_EXPORTERS)",
                    )
                )
        return report

    def pytest_unconfigure(self) -> None:
        self.close()

    def close(self) -> None:
        for exporter in self.exporters:
            try:
                exporter.close()
            except Exception as exc:  # never hide the test results behind a teardown error
                print(f"jumpstarter: stopping {exporter.spec}: {exc}", file=sys.stderr)
        self.exporters = []


_LOGS = pytest.StashKey[dict]()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
