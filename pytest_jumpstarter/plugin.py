"""The pytest hooks: exporters from --exporter, and a client fixture per export name.

Inert until configured: without exporters nothing heavy is imported and no
fixture is added; a test asking for an unknown fixture gets a hint to pass
--exporter. With pytest-xdist the controlling process starts the exporters
once and hands their addresses to the workers; every test leases the
exporters it uses, so no two tests drive one board at once.
"""

from __future__ import annotations

import difflib
import getpass
import os
import socket
import sys
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import pytest

from jumpstarter.utils.env import set_fallback as set_env_fallback
from pytest_jumpstarter import settings

MOCK_MARKER = "jumpstarter_mock"
EXPORTER_MARKER = "exporter"
SETTINGS_MARKER = "jumpstarter"
TARGET = "jumpstarter_target"  # the fixture that pins a test to one exporter in matrix mode
HANDOFF = "jumpstarter_exporters"  # key of xdist's workerinput


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        f"{MOCK_MARKER}(**exports): serve these Driver instances (or factories of them) in-process under these "
        "export names for this test, instead of the exporters' drivers",
        f"{EXPORTER_MARKER}(*exports, **labels): use only exporters carrying these labels (for the named "
        "exports, or all)",
        f"{SETTINGS_MARKER}(**settings): this test's own {', '.join(settings.PER_TEST)} (beats option, env, ini)",
    ):
        config.addinivalue_line("markers", line)
    config.pluginmanager.register(Lab(config), "jumpstarter-lab")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per exporter."""
    exporters, _ = settings.resolve(config, settings.EXPORTERS)
    return len(exporters) or None


def pytest_report_header(config: pytest.Config) -> list[str]:
    lab: Lab = config.pluginmanager.get_plugin("jumpstarter-lab")
    if not lab.exporters:
        return []
    lines = [f"jumpstarter: exporters from {lab.sources['exporters']}:"]
    for exporter in lab.exporters:
        labels = ", ".join(f"{k}={v}" for k, v in exporter.labels.items())
        lines.append(
            f"  {exporter.describe()}: {', '.join(exporter.exports) or 'no exports'}"
            + (f" [{labels}]" if labels else "")
        )
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
        self.workerid: str | None = getattr(config, "workerinput", {}).get("workerid")
        self.exporters: list = []
        self.pool = None
        self.scope = "function"
        self.live = False  # show calls as they happen (--jumpstarter-log or its marker; not -v: noisy under xdist)
        self.fixture_names: set[str] = set()
        self.calls: list[str] = []
        self.notes: list[str] = []
        self._handoffs: list[dict] | None = None
        self._log_positions: dict[str, dict[str, int]] = {}
        self.holder = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}" + (
            f" {self.workerid}" if self.workerid else ""
        )
        if self.values["exporters"]:
            self._load()

    def _load(self) -> None:
        from jumpstarter.errors import JumpstarterError
        from pytest_jumpstarter.lab import AddressExporter, RemoteExporter, YamlExporter, is_yaml, unique_names
        from pytest_jumpstarter.pool import Pool

        mode, passphrase, tls = self.values["mode"], self.values["passphrase"] or None, self._tls()
        self.scope = self._choice("lease_scope", settings.SCOPES)
        self._choice("mode", settings.MODES)
        timeout = self._seconds("start_timeout", self.values["start_timeout"])
        self._seconds("lease_timeout", self.values["lease_timeout"])
        handoffs = getattr(self.config, "workerinput", {}).get(HANDOFF)
        if handoffs is not None:  # an xdist worker: the controlling process started the exporters
            self.exporters = [RemoteExporter(h, passphrase) for h in handoffs]
        for spec in self.values["exporters"] if handoffs is None else ():
            try:
                exporter = YamlExporter(spec, passphrase, mode, timeout) if is_yaml(spec) else None
                exporter = exporter or AddressExporter(spec, passphrase, tls)
            except (JumpstarterError, OSError) as exc:
                self.close()
                raise pytest.UsageError(f"jumpstarter: --exporter {spec}: {exc}") from None
            self.exporters.append(exporter)
        unique_names(self.exporters)
        for exporter in self.exporters:
            exporter.observers.append(self._record)
        offset = int(self.workerid.removeprefix("gw")) if self.workerid else 0
        self.pool = Pool(self.exporters, offset)
        set_env_fallback(self._env_lease)
        fixtures = types.ModuleType("pytest_jumpstarter.exports")
        fixtures.exporter = pytest.fixture(name="exporter", scope=self.scope)(self._root_fixture())
        self.config.pluginmanager.register(fixtures, "jumpstarter-exports")
        self._add_export_fixtures([n for e in self.exporters for n in e.exports])

    def _tls(self):
        """How exporters given by address are reached: False (plain gRPC), True (system CAs) or a CA file."""
        from jumpstarter.utils.env import JUMPSTARTER_HOST, shell_tls

        value = self.values["tls"] or ""
        if not value:  # a TLS `jmp shell` around pytest: its exporter speaks TLS
            shell = self.sources["exporters"].startswith(f"env {JUMPSTARTER_HOST}")
            return shell and shell_tls(self.values["exporters"][0])
        if value == "system":
            return True
        if not os.path.isfile(value):
            raise pytest.UsageError(
                f"jumpstarter: --exporter-tls {value} ({self.sources['tls']}): no such CA certificate file"
            )
        return os.path.abspath(value)

    def _choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.values[key]
        if value not in allowed:
            raise pytest.UsageError(
                f"jumpstarter: {key.replace('_', ' ')} {value!r} ({self.sources[key]}) "
                f"must be one of {', '.join(allowed)}"
            )
        return value

    def _seconds(self, key: str, value: Any, where: str | None = None) -> float:
        """``value`` as seconds. A bad session setting stops the run (usage error); a bad marker fails its test."""
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
        message = f"jumpstarter: {key.replace('_', ' ')} {value!r} ({where or self.sources[key]}) is not a number"
        if where is not None:
            pytest.fail(message, pytrace=False)
        raise pytest.UsageError(message)

    def _add_export_fixtures(self, names: list[str]) -> None:
        names = [n for n in dict.fromkeys(names) if n not in self.fixture_names]
        if not names:
            return
        fixtures = types.ModuleType(f"pytest_jumpstarter.exports.{'_'.join(names)}")
        if not self.fixture_names:
            setattr(fixtures, TARGET, pytest.fixture(name=TARGET, scope=self.scope)(_target))
        for name in names:
            setattr(fixtures, name, pytest.fixture(name=name, scope=self.scope)(self._export_fixture(name)))
        self.config.pluginmanager.register(fixtures, f"jumpstarter-exports-{'-'.join(names)}")
        self.fixture_names.update(names)

    # Fixtures ------------------------------------------------------------------

    def _export_fixture(self, name: str):
        def export(request: pytest.FixtureRequest, jumpstarter_target: str | None):
            client = self._mock(name, request)
            if client is None:
                claim = self._claim(request, jumpstarter_target)
                if name not in claim.chosen:
                    pytest.fail(
                        f"export {name!r} is only mocked ({MOCK_MARKER}) for other tests; this one has no mock", False
                    )
                client = getattr(claim.chosen[name].client(), name)
            self._mock_children(name, client, request)
            return client

        providers = [e.describe() for e in self.exporters if name in e.exports]
        export.__doc__ = f"client of export {name!r} ({', '.join(providers) or f'@pytest.mark.{MOCK_MARKER}'})"
        export._jumpstarter_export = name
        return export

    def _root_fixture(self):
        def exporter(request: pytest.FixtureRequest, jumpstarter_target: str | None):
            """The root client of the exporter this test leased (children: its exports)."""
            return self._claim(request, jumpstarter_target).first.client()

        exporter._jumpstarter_export = None
        return exporter

    @contextmanager
    def _env_lease(self) -> Iterator[Any]:
        """An exporter of this run, leased while inside: what ``env()`` gives tests when no shell is around."""
        from jumpstarter.errors import LeaseError
        from pytest_jumpstarter.pool import ClaimError

        timeout = self._seconds("lease_timeout", self.values["lease_timeout"])
        try:
            claim = self.pool.claim({None: {}}, f"{self.holder}: env()", timeout, notify=self._say)
        except ClaimError as exc:
            raise LeaseError(f"jumpstarter: env(): {exc}") from None
        try:
            yield claim.first.client()
        finally:
            claim.release()

    def _claim(self, request: pytest.FixtureRequest, target: str | None):
        """The leases of this fixture scope (a test by default), taken once for all of its exports."""
        from pytest_jumpstarter.pool import ClaimError

        node = request.node
        if self.pool is None:  # no exporters: the export's fixture exists because other tests mock it
            fixture = request.fixturename if request.fixturename != "exporter" else None
            what = f"export {fixture!r}" if fixture else "the exporter fixture"
            pytest.fail(
                f"jumpstarter: {what} needs an exporter, and no exporter is configured (it is mocked, with "
                f"@pytest.mark.{MOCK_MARKER}, only in other tests): pass --exporter YAML|ADDRESS (or set "
                "jumpstarter_exporters / JUMPSTARTER_EXPORTERS), or mock it in this test too",
                pytrace=False,
            )
        claims = node.stash.setdefault(_CLAIMS, {})
        if target in claims:
            return claims[target]
        items = [node] if isinstance(node, pytest.Item) else [i for i in node.session.items if node in i.listchain()]
        needs: dict = {}
        for item in items:
            for export, labels in self.needs_of(item).items():
                if needs.setdefault(export, labels) != labels:
                    pytest.fail(
                        f"tests under {node.nodeid} ask for export {export!r} with different labels "
                        f"({needs[export]} and {labels}); use --lease-scope function",
                        pytrace=False,
                    )
        if not needs:
            needs[None] = {}
        timeout = self._seconds("lease_timeout", *self._per_test(request._pyfuncitem, "lease_timeout"))
        holder = f"{self.holder}: {node.nodeid or 'session'}"
        failed = None
        try:
            claim = self.pool.claim(needs, holder, timeout, pinned=target, notify=self._say)
        except ClaimError as exc:
            failed = str(exc)
        if failed is not None:  # failing outside the except: no chained traceback in the report
            pytest.fail(f"jumpstarter: {failed}", pytrace=False)
        claims[target] = claim

        def release() -> None:
            claims.pop(target, None)
            claim.release()

        request.addfinalizer(release)
        return claim

    def needs_of(self, item: pytest.Item) -> dict:
        """Export name -> labels for the exports ``item`` takes from exporters (None: just ``exporter``)."""
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            return {}
        ours = []
        for name in info.names_closure:
            defs = info.name2fixturedefs.get(name)
            if defs and hasattr(defs[-1].func, "_jumpstarter_export"):
                ours.append(name)
        mocked = {name for m in item.iter_markers(MOCK_MARKER) for name in m.kwargs}
        exports = [n for n in ours if n != "exporter" and n not in mocked]
        needs = {n: self._labels(item, n) for n in exports}
        if "exporter" in ours and not exports:
            needs[None] = self._labels(item, None)
        return needs

    def _labels(self, item: pytest.Item, export: str | None) -> dict[str, str]:
        labels: dict[str, str] = {}
        for marker in item.iter_markers(EXPORTER_MARKER):  # the closest marker wins
            if not marker.args or export in marker.args:
                for key, value in marker.kwargs.items():
                    labels.setdefault(key, str(value))
        return labels

    def _per_test(self, item: pytest.Item | None, key: str) -> tuple[Any, str]:
        """A PER_TEST setting for ``item``: its marker's value, else the session's; and where it came from."""
        for marker in item.iter_markers(SETTINGS_MARKER) if item is not None else ():
            unknown = set(marker.kwargs) - set(settings.PER_TEST)
            if unknown:
                pytest.fail(
                    f"@pytest.mark.{SETTINGS_MARKER}: unknown setting {', '.join(sorted(unknown))} "
                    f"(per-test settings: {', '.join(settings.PER_TEST)})",
                    pytrace=False,
                )
            if key in marker.kwargs:
                return marker.kwargs[key], f"@pytest.mark.{SETTINGS_MARKER} of {item.nodeid}"
        return self.values[key], self.sources[key]

    def _mock(self, name: str, request: pytest.FixtureRequest):
        for marker in request.node.iter_markers(MOCK_MARKER):
            if name in marker.kwargs:
                return self._serve_mock(marker.kwargs[name], request)
        return None

    def _serve_mock(self, driver: Any, request: pytest.FixtureRequest):
        """``driver`` (a Driver, or a factory of one) served in-process until the test's fixtures end."""
        from jumpstarter.common.utils import serve
        from jumpstarter.driver import Driver

        driver = driver if isinstance(driver, Driver) else driver()
        stack = ExitStack()
        client = stack.enter_context(serve(driver))
        request.addfinalizer(stack.close)
        client.connection.observers.append(self._record)
        return client

    def _mock_children(self, name: str, client: Any, request: pytest.FixtureRequest) -> None:
        """Mocks of drivers below export ``name`` (``jumpstarter_mock(**{"dut.power": MockPower})``): for this
        test, the child's client is the mock's, in the export's client (real or mocked) it is a child of."""
        mocks: dict[str, Any] = {}
        for marker in request.node.iter_markers(MOCK_MARKER):  # the closest marker wins
            for key, driver in marker.kwargs.items():
                if key.startswith(f"{name}."):
                    mocks.setdefault(key, driver)
        for path, driver in mocks.items():
            parent = client
            *between, last = path.split(".")[1:]
            try:
                for step in between:
                    parent = parent.children[step]
                original = parent.children[last]
            except KeyError:
                pytest.fail(f"@pytest.mark.{MOCK_MARKER}: {path!r}: {name!r} has no such child", pytrace=False)
            children = parent.children
            children[last] = self._serve_mock(driver, request)
            request.addfinalizer(
                lambda children=children, last=last, original=original: children.update({last: original})
            )

    # xdist -------------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        """In the controlling process: start every exporter once, and tell each worker where they are."""
        if self._handoffs is None:
            with ThreadPoolExecutor(max(1, len(self.exporters))) as starting:
                self._handoffs = list(starting.map(lambda e: e.handoff(), self.exporters))
        node.workerinput[HANDOFF] = self._handoffs

    # Hooks -----------------------------------------------------------------------

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Export names that only mocks provide get fixtures too (a test may mock without any exporter)."""
        mocked = {
            name for item in items for m in item.iter_markers(MOCK_MARKER) for name in m.kwargs if "." not in name
        }
        new = sorted(mocked - self.fixture_names)
        if new:
            self._add_export_fixtures(new)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Matrix mode: a test that uses exports runs once per exporter that fits it."""
        if not self.values["matrix"] or self.pool is None or TARGET not in metafunc.fixturenames:
            return
        needs = self.needs_of(metafunc.definition)
        names = [e.name for e in self.exporters if all(e.provides(x) and e.matches(lb) for x, lb in needs.items())]
        if names:  # none fits: unparametrized, the test fails at set-up saying why
            metafunc.parametrize(TARGET, names, ids=names, indirect=True, scope=self.scope)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.calls, self.notes = [], []
        self.live = bool(self._per_test(item, "log")[0])
        self._check_mocks(item)
        info = getattr(item, "_fixtureinfo", None)
        manager = getattr(item.session, "_fixturemanager", None)
        if info is None or manager is None:
            return
        for name in info.names_closure:
            if name == "request" or name in info.name2fixturedefs or manager.getfixturedefs(name, item):
                continue
            provided = sorted({n for e in self.exporters for n in e.exports})
            if not provided:
                if any(item.iter_markers(MOCK_MARKER)):
                    continue
                return  # pytest's own "fixture not found" stands; see pytest_runtest_makereport
            below = sorted({path for e in self.exporters for path in e.descendants if path.endswith(f".{name}")})
            close = difflib.get_close_matches(name, provided, n=1)
            if not below and not close:
                return  # not an export's name: pytest's own "fixture not found", with its list, stands
            where = "; ".join(f"{e.name}: {', '.join(e.exports) or 'none'}" for e in self.exporters)
            if below:
                uses = " or ".join(below)
                pytest.fail(
                    f"{name!r} is not an export but a child of one: use {uses} (exports: {where})", pytrace=False
                )
            pytest.fail(f"no exporter provides export {name!r}; did you mean {close[0]!r}? (exports: {where})", False)

    def _check_mocks(self, item: pytest.Item) -> None:
        """Every jumpstarter_mock keyword names an export the test uses, or a driver below one: a mock that
        would be ignored (and the real driver driven instead) is an error."""
        used = set(getattr(item, "fixturenames", ()))
        for node, marker in item.iter_markers_with_node(MOCK_MARKER):
            if node is not item:  # a module's or class's mock applies to those of its tests that use it
                continue
            for key in marker.kwargs:
                if key.split(".")[0] in used:
                    continue
                below = sorted({p for e in self.exporters for p in e.descendants if p.endswith(f".{key}")})
                hint = f"; to mock a child, name its path: {', '.join(below)}" if below else ""
                exports = sorted(used & self.fixture_names) or ["none"]
                pytest.fail(
                    f"@pytest.mark.{MOCK_MARKER}({key}=...): this test uses no export {key!r}{hint} "
                    f"(the exports it uses: {', '.join(exports)})",
                    pytrace=False,
                )

    def pytest_runtest_call(self, item: pytest.Item) -> None:
        """junitxml and the controller's log sections learn which exporters the test used."""
        claims = [c for node in item.listchain() for c in node.stash.get(_CLAIMS, {}).values()]
        used = {e.name for c in claims for e in c.chosen.values()}
        item.user_properties.extend(("jumpstarter_exporter", name) for name in sorted(used))

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        """Where each exporter's output stood when a test began (runs in the process that owns the exporters)."""
        if self.exporters and self.workerid is None:
            self._log_positions[nodeid] = {e.name: e.log_position for e in self.exporters}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        since = self._log_positions.get(report.nodeid) if report.failed else None
        if since is None or report.when == "teardown":
            return
        used = {value for key, value in report.user_properties if key == "jumpstarter_exporter"}
        for exporter in self.exporters:
            if exporter.name in used or (report.when == "setup" and exporter.name in since):
                text = exporter.output(since.get(exporter.name, 0))
                if text:
                    report.sections.append((f"exporter {exporter.name} log", text))

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self._log_positions.pop(nodeid, None)

    def _record(self, target: str, method: str, args: tuple, outcome: Any, seconds: float) -> None:
        shown = ", ".join(_short(a) for a in args)
        result = (
            f"raised {type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else _short(outcome)
        )
        line = f"{target + '.' if target else ''}{method}({shown}) -> {result}  [{seconds * 1e3:.1f} ms]"
        self.calls.append(line)
        if self.live:
            self._write(line)

    def _say(self, text: str) -> None:
        """A note about leases: shown live, and kept for the test's report."""
        self.notes.append(text)
        self._write(text)

    def _write(self, text: str) -> None:
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else nullcontext():
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None and self.workerid is None:
                reporter.write_line(f"jumpstarter: {text}")
            else:  # an xdist worker: its stderr is the controlling process's terminal
                print(f"[{self.workerid}] jumpstarter: {text}", file=sys.stderr, flush=True)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        if self.notes and call.when != "teardown":
            report.sections.append(("jumpstarter lease", "\n".join(self.notes)))
            self.notes = []
        if report.failed:
            if self.calls and call.when == "call":
                report.sections.append(("jumpstarter calls", "\n".join(self.calls)))
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
        if self.exporters:
            set_env_fallback(None)
        for exporter in self.exporters:
            try:
                exporter.close()
            except Exception as exc:  # never hide the test results behind a teardown error
                print(f"jumpstarter: stopping {exporter.spec}: {exc}", file=sys.stderr)
        self.exporters = []


def _target(request: pytest.FixtureRequest) -> str | None:
    """The exporter a matrix-mode test runs on (None: any that fits and is free)."""
    return getattr(request, "param", None)


_CLAIMS = pytest.StashKey[dict]()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
