"""The pytest plugin, run as a user runs it: a temporary project, the example drivers, pytest."""

from __future__ import annotations

from pathlib import Path

import pytest
from samples import CRASHY_DRIVER, EXAMPLES, SEED_YAML, exporter_yaml

from jumpstarter.exporter.process import ExporterProcess

CUSTOM_YAML = EXAMPLES / "jumpstarter-custom-driver" / "custom.yaml"
BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"

CUSTOM_TESTS = """
    from jumpstarter_custom_driver import CustomClient

    def test_ls(custom):
        assert isinstance(custom, CustomClient)
        assert "test_custom.py" in custom.ls().split()

    def test_root(exporter):
        assert list(exporter.children) == ["custom"]
        assert exporter.custom.execute("echo", ["hi"]) == "hi\\n"
"""


@pytest.mark.parametrize("mode", ["subprocess", "inprocess"])
def test_yaml_exporter_gives_a_fixture_per_export(pytester, mode):
    pytester.makepyfile(test_custom=CUSTOM_TESTS)
    result = pytester.runpytest_subprocess("--exporter", str(CUSTOM_YAML), "--exporter-mode", mode)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["jumpstarter: exporters from command line:", f"  {CUSTOM_YAML} ({mode}): custom"])


def test_running_exporter_by_address_with_passphrase(pytester):
    pytester.makepyfile(
        """
        def test_board(board):
            assert board.describe() == {"name": "demo-1", "baudrate": 9600}
            board.power.on()
            assert board.power.read() is True
        """
    )
    with ExporterProcess.start(BOARD_YAML, "--listen", "127.0.0.1:0", "--passphrase", "pw") as running:
        result = pytester.runpytest_subprocess(
            "--exporter", running.address, "--exporter-passphrase", "pw", "-s", "--jumpstarter-log"
        )
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["jumpstarter: board.power.on() -> None*"])  # calls recorded by address too
        wrong = pytester.runpytest_subprocess("--exporter", running.address, "--exporter-passphrase", "nope")
        assert wrong.ret == pytest.ExitCode.USAGE_ERROR
        wrong.stderr.fnmatch_lines(
            [f"*--exporter {running.address}: exporter at {running.address} refused the passphrase*"]
        )


def test_exporters_from_ini_and_env_with_precedence(pytester, monkeypatch):
    pytester.makepyfile(test_custom=CUSTOM_TESTS)
    pytester.makeini(f"[pytest]\njumpstarter_exporters =\n    {CUSTOM_YAML}\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=2)
    monkeypatch.setenv("JUMPSTARTER_EXPORTERS", str(BOARD_YAML))
    result = pytester.runpytest_subprocess()  # env beats ini: no 'custom' export now
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["jumpstarter: exporters from env JUMPSTARTER_EXPORTERS:", "*fixture 'custom' not found*"]
    )
    result = pytester.runpytest_subprocess("--exporter", str(CUSTOM_YAML))  # command line beats env
    result.assert_outcomes(passed=2)


def test_unknown_export_fails_at_setup_listing_what_exists(pytester):
    pytester.makepyfile("def test_typo(custm):\n    pass\n")
    result = pytester.runpytest_subprocess("--exporter", str(CUSTOM_YAML))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*no exporter provides export 'custm'; did you mean 'custom'? (exports: custom: custom)*"]
    )


def test_a_childs_name_says_which_export_and_other_typos_get_pytests_own_error(pytester):
    pytester.makepyfile("def test_child(power):\n    pass\n\ndef test_typo(tmp_pth):\n    pass\n")
    result = pytester.runpytest_subprocess("--exporter", str(BOARD_YAML))
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*'power' is not an export but a child of one: use board.power (exports: demo: board)*"]
    )
    result.stdout.fnmatch_lines(["*fixture 'tmp_pth' not found", "*available fixtures:*tmp_path*", "*.py:4"])
    assert "no exporter provides export 'tmp_pth'" not in result.stdout.str()


def test_no_exporter_configured_is_an_error_with_a_hint(pytester):
    pytester.makepyfile("def test_x(custom):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pass --exporter YAML|ADDRESS*"])


def test_bad_yaml_is_a_usage_error_naming_file_and_line(pytester):
    config = pytester.path / "custom.yaml"
    config.write_text(SEED_YAML)
    pytester.makepyfile("def test_x(custom):\n    pass\n")
    result = pytester.runpytest_subprocess("--exporter", str(config))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*{config}:9: export 'custom'*did you mean 'jumpstarter_custom_driver.CustomDriver'*"]
    )
    assert "Traceback" not in result.stderr.str()
    missing = pytester.runpytest_subprocess("--exporter", str(pytester.path / "nope.yaml"))
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines([f"*--exporter {pytester.path / 'nope.yaml'}: *"])
    broken = pytester.path / "broken.yaml"
    broken.write_text("apiVersion: jumpstarter.dev/v1alpha1\nexport: [custom\n")
    unparsable = pytester.runpytest_subprocess("--exporter", str(broken))
    assert unparsable.ret == pytest.ExitCode.USAGE_ERROR
    unparsable.stderr.fnmatch_lines([f"*{broken}:*"])
    assert "Traceback" not in unparsable.stderr.str()


def test_nothing_listening_is_a_usage_error_naming_the_address(pytester):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    pytester.makepyfile("def test_x(custom):\n    pass\n")
    result = pytester.runpytest_subprocess("--exporter", address)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*no exporter answers at {address}*"])


def test_failing_test_report_shows_calls_and_exporter_log(pytester):
    pytester.makepyfile(
        """
        def test_fails(board):
            board.power.on()
            assert board.add(2, 2) == 5
        """
    )
    result = pytester.runpytest_subprocess("--exporter", str(BOARD_YAML))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- jumpstarter calls -*",
            "board.power.on() -> None  *ms]",
            "board.add(2, 2) -> 4  *ms]",
            "*- exporter demo log -*",
            "*power on*",
        ]
    )


def test_live_call_log_with_option(pytester):
    pytester.makepyfile("def test_ok(board):\n    assert board.echo('x') == 'x'\n")
    result = pytester.runpytest_subprocess("--exporter", str(BOARD_YAML), "--jumpstarter-log", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["jumpstarter: board.echo('x') -> 'x'*"])


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_driver_that_fails_to_start_fails_the_tests_that_need_it(pytester, workers):
    pytester.makepyfile(
        broken_driver="""
        from dataclasses import dataclass
        from jumpstarter.driver import Driver

        @dataclass(kw_only=True)
        class Broken(Driver):
            @classmethod
            def client(cls):
                return "jumpstarter.client.DriverClient"

            def __post_init__(self):
                super().__post_init__()
                raise OSError("serial port /dev/ttyUSB9 not found")
        """,
        test_it="def test_a(dut):\n    pass\n\ndef test_b(dut):\n    pass\n\ndef test_unrelated():\n    pass\n",
    )
    config = pytester.path / "broken.yaml"
    config.write_text(
        "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\nexport:\n  dut:\n    type: broken_driver.Broken\n"
    )
    result = pytester.runpytest_subprocess("--exporter", str(config), *workers)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*exporter *broken.yaml exited with code 2:*", "*serial port /dev/ttyUSB9 not found*"])
    assert "During handling" not in result.stdout.str()


# A driver that notes in the file $NOTES when it is made and closed: which exporter touched the hardware, and when;
# "started-held" if its exporter was started held, as the plugin loaded (jumpstarter run --hold).
NOTING_DRIVER = """
import os
import sys
from jumpstarter.driver import Driver

class Noting(Driver):
    @classmethod
    def client(cls):
        return "jumpstarter.client.DriverClient"

    def __post_init__(self):
        super().__post_init__()
        self.note("started-held" if "--hold" in sys.argv else "started")

    def close(self):
        self.note("closed")
        super().close()

    def note(self, what):
        with open(os.environ["NOTES"], "a") as notes:
            notes.write(what + "\\n")
"""


def noting_project(pytester, monkeypatch) -> tuple[str, Path]:
    """A project with the Noting driver, its ExporterConfig, and $NOTES set to a file not yet written."""
    pytester.makepyfile(noting_driver=NOTING_DRIVER, test_it="def test_unrelated():\n    pass\n")
    config = str(exporter_yaml(pytester.path / "noting.yaml", {"dut": "noting_driver.Noting"}))
    notes = pytester.path / "notes.txt"
    monkeypatch.setenv("NOTES", str(notes))
    return config, notes


def test_exporters_start_at_configure_time_unless_only_collecting(pytester, monkeypatch):
    config, notes = noting_project(pytester, monkeypatch)
    pytester.runpytest_subprocess("--exporter", config, "--collect-only").assert_outcomes()
    assert not notes.exists()  # collecting touches no hardware
    # Started (held, as the plugin loaded) while pytest collects, though no test needs it, and stopped at the end:
    # its drivers closed.
    pytester.runpytest_subprocess("--exporter", config).assert_outcomes(passed=1)
    assert notes.read_text().split() == ["started-held", "closed"]
    notes.unlink()
    pytester.makeini("[pytest]\njumpstarter_exporters = noting.yaml\n")  # from the ini file, the same
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    assert notes.read_text().split() == ["started-held", "closed"]
    notes.unlink()
    monkeypatch.setenv("PYTEST_ADDOPTS", f"--exporter={config}")  # and from PYTEST_ADDOPTS
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    assert notes.read_text().split() == ["started-held", "closed"]


def test_an_exporter_started_as_the_plugin_loads_makes_no_driver_unless_configure_takes_it(pytester, monkeypatch):
    """Exporters start held as the plugin loads, before conftest.py files and options are all known; configure
    lets one go only if it was started as configure would start it, else stops it before it made any driver."""
    config, notes = noting_project(pytester, monkeypatch)
    # A conftest.py changes the environment the exporter would get: the held one is dropped, a new one started.
    others = pytester.path / "other-notes.txt"
    pytester.makeconftest(f"import os\nos.environ['NOTES'] = {str(others)!r}\n")
    pytester.runpytest_subprocess("--exporter", config).assert_outcomes(passed=1)
    assert not notes.exists()
    assert others.read_text().split() == ["started", "closed"]
    # A run that ends before configure (a usage error, found after the plugin loaded) makes no driver either.
    (pytester.path / "conftest.py").unlink()
    result = pytester.runpytest_subprocess("--exporter", config, "--no-such-option")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert not notes.exists()


def test_run_hold_makes_no_driver_until_a_line_comes_on_stdin(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(tmp_path)
    (tmp_path / "noting_driver.py").write_text(NOTING_DRIVER)
    config = exporter_yaml(tmp_path / "noting.yaml", {"dut": "noting_driver.Noting"})
    notes = tmp_path / "notes.txt"
    env = {"NOTES": str(notes), "PYTHONPATH": str(tmp_path)}
    held = ExporterProcess(config, "--hold", "--listen", f"unix://{tmp_path / 'held.sock'}", env=env)
    assert held.process.stdin is not None
    held.process.stdin.close()  # nobody lets it go: it ends, having made no driver
    assert held.process.wait(30) == 1  # and says so: not a success
    assert not notes.exists()
    released = ExporterProcess(config, "--hold", "--listen", f"unix://{tmp_path / 'released.sock'}", env=env)
    with released:
        released.release()
        released.wait_ready(30)
        assert notes.read_text().split() == ["started-held"]
    assert notes.read_text().split() == ["started-held", "closed"]


def test_mocks_from_conftest_and_marker_without_hardware(pytester):
    pytester.makeconftest(
        """
        from jumpstarter_custom_driver import CustomDriver
        from jumpstarter.driver import export
        from pytest_jumpstarter import mock_export

        class MockCustomDriver(CustomDriver):
            @export
            def execute(self, command, args):
                return f"mock {command} {' '.join(args)}"

        custom = mock_export(MockCustomDriver)
        """
    )
    pytester.makepyfile(
        """
        import pytest
        from jumpstarter_driver_demo import Board

        def test_conftest_mock(custom):
            assert custom.ls() == "mock ls "

        @pytest.mark.jumpstarter_mock(board=Board)
        def test_marker_mock(board):
            assert board.add(1, 2) == 3
        """
    )
    result = pytester.runpytest_subprocess("--strict-markers")
    result.assert_outcomes(passed=2)


def test_export_mocked_only_in_another_test_fails_the_real_one_without_exporters(pytester):
    pytester.makepyfile(
        """
        import pytest
        from jumpstarter_driver_demo import Board

        @pytest.mark.jumpstarter_mock(board=Board)
        def test_mocked(board):
            assert board.add(1, 2) == 3

        def test_real(board):
            board.add(1, 2)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)  # at set-up, as a missing fixture is
    result.stdout.fnmatch_lines(
        ["*jumpstarter: export 'board' needs an exporter, and no exporter is configured*pass --exporter YAML|ADDRESS*"]
    )
    assert "AttributeError" not in result.stdout.str()


def test_mock_one_child_of_a_real_export_and_unused_mock_keywords_are_errors(pytester):
    pytester.makepyfile(
        """
        import pytest
        from jumpstarter_driver_demo import Power

        switch = Power(on_at_start=True)

        @pytest.mark.jumpstarter_mock(**{"board.power": switch})
        def test_real_board_mocked_power(board):
            assert board.describe() == {"name": "demo-1", "baudrate": 9600}  # the exporter's board
            board.power.off()
            assert switch.history == ["off"]  # the mock switched, in this process

        def test_after_it_the_real_power_again(board):
            board.power.on()
            assert board.power.read() is True and switch.history == ["off"]

        @pytest.mark.jumpstarter_mock(power=Power)
        def test_child_name_as_keyword(board):
            pass

        @pytest.mark.jumpstarter_mock(**{"board.fan": Power})
        def test_no_such_child(board):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--exporter", str(BOARD_YAML))
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.jumpstarter_mock(power=...): this test uses no export 'power'; to mock a child, "
            "name its path: board.power (the exports it uses: board)"
        ]
    )
    result.stdout.fnmatch_lines(["*@pytest.mark.jumpstarter_mock: 'board.fan': 'board' has no such child"])


def test_lease_hooks_prepare_the_board_a_test_gets_and_tidy_it_after(pytester):
    pytester.makeconftest(
        """
        events = []

        def pytest_jumpstarter_lease_acquired(node, exporter):
            events.append(f"acquired {exporter.name} for {node.name}")
            if node.name == "test_refused":
                raise RuntimeError("flashing failed")
            exporter.client().board.power.on()  # e.g. power the board up for the test

        def pytest_jumpstarter_lease_released(node, exporter):
            events.append(f"released {exporter.name} for {node.name}")
            exporter.client().board.power.off()
        """
    )
    pytester.makepyfile(
        """
        from conftest import events

        def test_powered(board):
            assert board.power.read() is True
            assert events == ["acquired demo for test_powered"]

        def test_refused(board):
            pass

        def test_after(board):
            assert events[-3:] == ["released demo for test_powered", "acquired demo for test_refused",
                                   "acquired demo for test_after"]
        """
    )
    result = pytester.runpytest_subprocess("--exporter", str(BOARD_YAML), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)  # the refused lease was given back: test_after got the board
    result.stdout.fnmatch_lines(["*RuntimeError: flashing failed"])


def test_failure_report_is_short_the_test_line_and_the_drivers_message(pytester):
    pytester.makepyfile(
        """
        import pytest
        from jumpstarter_driver_demo import Board

        @pytest.mark.jumpstarter_mock(board=Board)
        def test_call_fails(board):
            board.fail("other", "relay stuck")

        @pytest.mark.jumpstarter_mock(board=Board)
        def test_assert_on_client(board):
            assert board is None
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(['>*board.fail("other", "relay stuck")', "E*relay stuck*"])
    result.stdout.fnmatch_lines(["E*assert BoardClient(name='') is None"])  # not the whole tree with uuids
    for ours in ("jumpstarter/client/base.py", "jumpstarter/client/connection.py"):
        assert ours not in out  # the client's own frames are hidden


def test_plugin_is_inert_and_documented(pytester):
    pytester.makepyfile("import sys\n\ndef test_plain():\n    assert 'grpc' not in sys.modules\n")
    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "jumpstarter:" not in result.stdout.str()
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    for option in ("--exporter=YAML|ADDRESS", "--exporter-passphrase", "--exporter-mode", "--jumpstarter-log"):
        assert option in help_text
    assert "JUMPSTARTER_EXPORTERS" in help_text


def test_exporter_dying_mid_session_fails_the_tests_that_need_it_fast(pytester):
    pytester.makepyfile(
        crashy_driver=CRASHY_DRIVER,
        test_it="""
            import pytest
            from jumpstarter.errors import JumpstarterError

            def test_1_crash(dut):
                assert dut.call("ping") == "pong"
                with pytest.raises(JumpstarterError):
                    dut.call("crash")

            def test_2_after(dut):
                dut.call("ping")

            def test_3_after(dut):
                dut.call("ping")

            def test_4_unrelated():
                pass
        """,
    )
    config = str(exporter_yaml(pytester.path / "crashy.yaml", {"dut": "crashy_driver.Crashy"}))
    result = pytester.runpytest_subprocess("--exporter", config, timeout=150)
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines([f"*exporter {config} died (exit code 3)*"])
    assert result.duration < 90  # not waiting out a timeout (calls 900 s, leases minutes); ~3 s on a quiet machine
    # Without pytest.raises, the test whose call killed the exporter is told so, not only the next one.
    pytester.makepyfile(test_it="def test_crash(dut):\n    dut.call('crash')\n")
    result = pytester.runpytest_subprocess("--exporter", config, timeout=60)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*- jumpstarter -*", f"exporter crashy ({config}) died during this test, exit code 3: its log follows"]
    )


def test_a_call_with_no_end_fails_its_test_at_the_call_timeout(pytester):
    pytester.makepyfile(
        """
        import pytest

        def test_stuck(board):
            board.call("block", 5)

        @pytest.mark.jumpstarter(call_timeout=0)
        def test_no_limit(board):
            assert board.call("block", 1.5) >= 1.5

        @pytest.mark.jumpstarter(call_timeout=0.5)
        def test_stricter(board):
            board.call("block", 2)
        """
    )
    result = pytester.runpytest_subprocess("--exporter", str(BOARD_YAML), "--call-timeout", "1", timeout=60)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*DriverTimeout: board.block: no answer within the call timeout of 1 s: the driver may be stuck*",
            "*DriverTimeout: board.block: no answer within the call timeout of 0.5 s*",
        ]
    )
    assert result.duration < 30


def test_junitxml_names_the_exporter_each_test_used(pytester):
    import xml.etree.ElementTree as ET

    pytester.makepyfile(test_custom=CUSTOM_TESTS)
    result = pytester.runpytest_subprocess("--exporter", str(CUSTOM_YAML), "--junitxml", "out.xml")
    result.assert_outcomes(passed=2)
    cases = ET.parse(pytester.path / "out.xml").getroot().iter("testcase")
    used = {case.get("name"): [(p.get("name"), p.get("value")) for p in case.iter("property")] for case in cases}
    assert {name: props[:1] for name, props in used.items()} == {
        name: [("jumpstarter_exporter", "custom")] for name in ("test_ls", "test_root")
    }
    assert {props[1][0] for props in used.values()} == {"jumpstarter_waited"}  # see tests/test_timeline.py


def test_async_tests_use_the_same_fixtures(pytester):
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.anyio

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        async def test_async_call(custom):
            assert await custom.call_async("execute", "echo", ["async"]) == "async\\n"

        async def test_async_children(board):
            await board.power.call_async("on")
            assert await board.power.call_async("read") is True
            assert [n async for n in board.streamingcall_async("count", 3)] == [0, 1, 2]
        """
    )
    result = pytester.runpytest_subprocess(
        "--exporter", str(CUSTOM_YAML), "--exporter", str(BOARD_YAML), "--strict-markers"
    )
    result.assert_outcomes(passed=2)


def test_directory_mock_overrides_the_real_export_below_its_conftest(pytester):
    pytester.mkpydir("hardware").joinpath("test_real.py").write_text(
        "def test_real(custom):\n    assert custom.execute('echo', ['real']) == 'real\\n'\n"
    )
    mocked = pytester.mkpydir("mocked")
    mocked.joinpath("conftest.py").write_text(
        "from jumpstarter_custom_driver import CustomDriver\n"
        "from jumpstarter.driver import export\n"
        "from pytest_jumpstarter import mock_export\n\n"
        "class Mock(CustomDriver):\n"
        "    @export\n"
        "    def execute(self, command, args):\n"
        "        return 'mocked'\n\n"
        "custom = mock_export(Mock)\n"
    )
    mocked.joinpath("test_mocked.py").write_text("def test_mocked(custom):\n    assert custom.ls() == 'mocked'\n")
    result = pytester.runpytest_subprocess("--exporter", str(CUSTOM_YAML), "-v")
    result.assert_outcomes(passed=2)


def test_a_marker_turns_the_live_call_log_on_for_one_test(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.jumpstarter(log=True)
        def test_loud(board):
            board.echo("loud")

        def test_quiet(board):
            board.echo("quiet")

        @pytest.mark.jumpstarter(colour="red")
        def test_typo(board):
            pass

        @pytest.mark.jumpstarter(lease_timeout="soon")
        def test_bad_timeout(board):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--exporter", str(BOARD_YAML), "-s", "-v")  # -v alone logs no calls
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(["*jumpstarter: board.echo('loud') -> 'loud'*", "*unknown setting colour*"])
    result.stdout.fnmatch_lines(
        ["*jumpstarter: lease timeout 'soon' (@pytest.mark.jumpstarter of *::test_bad_timeout) is not a number"]
    )
    assert "'quiet'" not in result.stdout.str()


def test_failing_report_under_xdist_shows_the_exporter_log(pytester):
    pytester.makepyfile("def test_fails(board):\n    board.power.on()\n    assert False\n")
    result = pytester.runpytest_subprocess("-n", "2", "--exporter", str(BOARD_YAML))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*- jumpstarter calls -*", "board.power.on() -> None*", "*- exporter demo log -*", "*power on*"]
    )


def test_exporter_of_a_surrounding_shell_is_used_and_tls_spoken_when_it_says_so(pytester, monkeypatch):
    pytester.makepyfile("def test_board(board):\n    assert board.add(2, 3) == 5\n")
    with ExporterProcess.start(BOARD_YAML, "--listen", "127.0.0.1:0", "--passphrase", "pw") as running:
        monkeypatch.setenv("JUMPSTARTER_HOST", running.address)
        monkeypatch.setenv("JMP_GRPC_PASSPHRASE", "pw")
        monkeypatch.setenv("JMP_GRPC_INSECURE", "1")
        result = pytester.runpytest_subprocess()
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["jumpstarter: exporters from env JUMPSTARTER_HOST (jmp shell):"])
        monkeypatch.delenv("JMP_GRPC_INSECURE")
        tls = pytester.runpytest_subprocess()
        assert tls.ret == pytest.ExitCode.USAGE_ERROR
        tls.stderr.fnmatch_lines([f"*no exporter answers at {running.address} over TLS*"])
