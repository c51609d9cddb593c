"""The pytest entry point (``pytest11``): options, markers, and the plugin's rooms, wired together.

Inert until configured: without exporters nothing heavy is imported and no fixture is added; a test asking
for an unknown fixture gets a hint to pass --exporter. Each concern has a module of its own:

- ``settings``: the options, their ini keys and environment variables, and their checks;
- ``lab``: the session's settings, exporters and lease pool (``exporters``, ``pool``);
- ``fixtures``: a client fixture per export, ``exporter``, mocks, set-up checks of names;
- ``leasing``: which exporters a test gets, and holding them for it;
- ``reporting``: calls, lease notes and exporter logs in a test's report;
- ``recording``, ``replay`` (and ``tapes``, their files): record driver calls on the bench, replay them in CI;
- ``xdist``: handing the exporters to pytest-xdist's workers;
- ``timeline``: who held which exporter and who waited, as a summary table and an HTML chart;
- ``history``: the run appended to the lab's memory across runs, and suspect boards kept out;
- ``health``, ``attempts`` (``boardstate``, ``junit``): boards' health checks, a failed test retried elsewhere;
- ``hookspecs``: what other plugins may implement (a lease acquired, released).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jumpstarter.utils.env import set_fallback as set_env_fallback
from pytest_jumpstarter import launch, redaction, settings
from pytest_jumpstarter.boardstate import BoardState
from pytest_jumpstarter.checks import SetupChecks
from pytest_jumpstarter.fixtures import Fixtures
from pytest_jumpstarter.health import MARKER as HEALTH_MARKER
from pytest_jumpstarter.lab import LAB, Lab
from pytest_jumpstarter.leasing import MARKER as EXPORTER_MARKER
from pytest_jumpstarter.leasing import MOCK_MARKER, Leasing
from pytest_jumpstarter.reporting import Reporting
from pytest_jumpstarter.timeline import Timeline
from pytest_jumpstarter.xdist import Handoff

REPORTING = pytest.StashKey[Reporting]()
BOARDS = pytest.StashKey[BoardState]()  # the run's board state (health.py, attempts.py), its folder for xdist


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_jumpstarter import hookspecs

    pluginmanager.add_hookspecs(hookspecs)
    from pytest_jumpstarter import labgrid_plugin

    labgrid_plugin.block_early(pluginmanager)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    from pytest_jumpstarter import labgrid_plugin

    labgrid_plugin.keep_out(early_config, parser, args)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    settings.add_options(parser)
    # Called as the plugin registers, well before configure: the first moment to start exporters.
    launch.start_held(parser, pluginmanager.get_plugin("pytestconfig"))


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        f"{MOCK_MARKER}(**exports): serve these Driver instances (or factories of them) in-process under these "
        "export names for this test, instead of the exporters' drivers; a driver below an export by its path, "
        '**{"board.power": MockPower}',
        f"{EXPORTER_MARKER}(*exports, **labels): use only exporters carrying these labels (for the named "
        "exports, or all)",
        f"{settings.MARKER}(**settings): this test's own {', '.join(settings.PER_TEST)} (beats option, env, ini)",
        redaction.MARKER_HELP,
        f"{HEALTH_MARKER}: this test is a board's health check: it runs on each board that fits it before the "
        "board's first test and after a test failed there; a board that fails it is out of the run",
    ):
        config.addinivalue_line("markers", line)
    lab = config.stash[LAB] = Lab(config)
    reporting = config.stash[REPORTING] = Reporting(lab)
    leasing = Leasing(lab, reporting.say)
    manager = config.pluginmanager
    manager.register(reporting, "jumpstarter-reporting")
    manager.register(leasing, "jumpstarter-leasing")
    recorder = replayer = None
    if lab.record:
        from pytest_jumpstarter.recording import Recorder

        recorder = Recorder(lab.record, controller=lab.workerid is None)
        manager.register(recorder, "jumpstarter-recorder")
    if lab.replay:
        from pytest_jumpstarter.replay import Replayer

        replayer = Replayer(lab.replay)
        manager.register(replayer, "jumpstarter-replayer")
    fixtures = Fixtures(lab, leasing, reporting, recorder, replayer)
    manager.register(fixtures, "jumpstarter-fixtures")
    manager.register(SetupChecks(lab, fixtures.names), "jumpstarter-checks")
    if lab.exporters or replayer:
        set_env_fallback(fixtures.env)
    manager.register(Handoff(lab.exporters), "jumpstarter-xdist")
    timeline = Timeline(lab, leasing)
    manager.register(timeline, "jumpstarter-timeline")
    if lab.values["history"] or lab.values["quarantine"]:
        from pytest_jumpstarter.history import History

        manager.register(History(lab, timeline), "jumpstarter-history")
    if lab.exporters:
        _register_attempts(config, lab, leasing)


def _register_attempts(config: pytest.Config, lab: Lab, leasing: Leasing) -> None:
    """Health checks and retries on other boards, with the run's board state shared by xdist's workers."""
    from pytest_jumpstarter.attempts import Attempts
    from pytest_jumpstarter.boardstate import FOLDER_KEY, BoardState
    from pytest_jumpstarter.health import Checks

    folder = getattr(config, "workerinput", {}).get(FOLDER_KEY)
    state = config.stash[BOARDS] = BoardState(Path(folder) if folder else None)
    checks = Checks(lab, state)
    config.pluginmanager.register(checks, "jumpstarter-health")
    config.pluginmanager.register(
        Attempts(lab, leasing, checks, state, lab.values.count("retry_elsewhere")), "jumpstarter-attempts"
    )
    from pytest_jumpstarter.junit import OneTestcase

    config.pluginmanager.register(OneTestcase(config), "jumpstarter-junit")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: each worker is told where the run's board state is."""
    from pytest_jumpstarter.boardstate import FOLDER_KEY

    state = node.config.stash.get(BOARDS, None)
    if state is not None:
        node.workerinput[FOLDER_KEY] = str(state.folder)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per exporter."""
    exporters, _ = settings.resolve(config, settings.EXPORTERS)
    return len(exporters) or None if isinstance(exporters, tuple) else None


def pytest_report_header(config: pytest.Config) -> list[str]:
    return config.stash[REPORTING].header()


def pytest_unconfigure(config: pytest.Config) -> None:
    lab = config.stash.get(LAB, None)
    if lab is None:
        return
    if lab.exporters or lab.replay:
        set_env_fallback(None)
    state = config.stash.get(BOARDS, None)
    if state is not None:
        state.close()
    lab.close()
