"""Client class paths come from the network: the allow list and the DriverClient check."""

# These tests call as upstream's driver packages and their tests do: loose argument types, methods patched.
# mypy: disable-error-code="arg-type, assignment, method-assign, func-returns-value"

from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

from jumpstarter.client import DriverClient, allow_client_modules, connect
from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export
from jumpstarter.errors import ClientClassError
from jumpstarter.exporter.server import serving


def naming(client_path: str) -> Driver:
    @dataclass(kw_only=True)
    class Named(Driver):
        @classmethod
        def client(cls) -> str:
            return client_path

        @export
        def ping(self) -> str:
            return "pong"

    return Named()


@contextmanager
def exporter(root: Driver, tmp_path):
    """An exporter as a remote client meets it: no trust from being in-process."""
    with start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(serving(root, f"unix://{tmp_path}/e.sock")) as address:
            yield address


def test_module_outside_the_allow_list_is_refused_before_import(tmp_path, monkeypatch, write):
    write(
        "rogue_client.py",
        f"""
        from pathlib import Path
        Path({str(tmp_path / "imported")!r}).write_text("ran")
        from jumpstarter.client import DriverClient
        class Rogue(DriverClient):
            pass
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("JUMPSTARTER_CLIENT_MODULES", raising=False)
    with exporter(naming("rogue_client.Rogue"), tmp_path) as address:
        with pytest.raises(ClientClassError) as info:
            connect(address)
        message = str(info.value)
        assert "names client class 'rogue_client.Rogue'" in message
        assert "JUMPSTARTER_CLIENT_MODULES=rogue_client" in message
        assert not (tmp_path / "imported").exists()
        assert "rogue_client" not in sys.modules

        monkeypatch.setenv("JUMPSTARTER_CLIENT_MODULES", "other, rogue_client")
        with connect(address) as root:
            assert type(root).__name__ == "Rogue"
            assert root.call("ping") == "pong"
    sys.modules.pop("rogue_client", None)


def test_a_driver_package_that_forgets_to_depend_on_jumpstarter_is_told_so(tmp_path, monkeypatch, write):
    """Installed, but its pyproject lacks dependencies = ["jumpstarter"]: the message says that, not 'install it'."""
    write("relay_pkg/__init__.py", "from jumpstarter.client import DriverClient\n\nclass Relay(DriverClient): ...\n")
    info = tmp_path / "my_relay-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-relay\nVersion: 0.1.0\n")
    (info / "RECORD").write_text("relay_pkg/__init__.py,,\nmy_relay-0.1.0.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("JUMPSTARTER_CLIENT_MODULES", raising=False)
    with exporter(naming("relay_pkg.Relay"), tmp_path) as address:
        with pytest.raises(ClientClassError) as raised:
            connect(address)
    message = str(raised.value)
    assert "module 'relay_pkg' is installed (distribution 'my-relay'), but that distribution does not depend" in message
    assert 'Add dependencies = ["jumpstarter"] to its pyproject.toml and reinstall it' in message
    assert "relay_pkg" not in sys.modules  # still not imported


def test_allowed_module_but_not_a_driver_client_is_refused(tmp_path):
    allow_client_modules("collections")
    with exporter(naming("collections.OrderedDict"), tmp_path) as address:
        with pytest.raises(ClientClassError, match="'collections.OrderedDict' is not a DriverClient subclass"):
            connect(address)


def test_installed_driver_packages_are_allowed(tmp_path):
    from jumpstarter_driver_demo import Power

    with exporter(Power(), tmp_path) as address:
        with connect(address) as root:
            assert type(root).__name__ == "PowerClient"


def test_missing_client_class_is_named(tmp_path):
    with exporter(naming("jumpstarter_driver_demo.client.NoSuchClient"), tmp_path) as address:
        with pytest.raises(ClientClassError, match="has no client class 'NoSuchClient'"):
            connect(address)


def test_driver_without_client_method_is_refused_at_definition():
    @dataclass(kw_only=True)
    class NoClient(Driver):
        pass

    with pytest.raises(TypeError, match="NoClient.*client"):
        NoClient()


def test_async_connect_is_not_needed_for_async_calls(tmp_path):
    """A blocking ``connect`` gives a client whose async twins work in any event loop."""
    with exporter(naming("jumpstarter.client.DriverClient"), tmp_path) as address:
        with connect(address) as root:
            assert isinstance(root, DriverClient)

            async def main():
                return await root.call_async("ping")

            assert anyio.run(main) == "pong"
            assert anyio.run(main) == "pong"  # a second loop gets its own channel


@dataclass(kw_only=True)
class Echoes(Driver):
    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    def echo(self, value: str) -> str:
        return value


@dataclass(kw_only=True)
class Relay(DriverClient):
    def on(self) -> None:
        self.call("on")


def test_client_built_by_hand_takes_upstreams_keywords_and_says_it_has_no_connection():
    # Upstream's driver tests build clients with mocks, then patch call(): Client(stub=..., portal=..., stack=...).
    portal, stack = object(), ExitStack()
    relay = Relay(stub=object(), portal=portal, stack=stack)
    assert relay.portal is portal and relay.stack is stack and relay.uuid
    relay.uuid = "test-uuid"
    with pytest.raises(ConnectionError, match="built by hand, without an exporter connection"):
        relay.on()
    relay.call = lambda method, *args: f"called {method}"
    assert relay.on() is None
    relay.close()  # nothing to close: no error


def test_assigned_portal_wins_and_none_restores_the_connections_own():
    with serve(Echoes()) as client:
        own = client.portal
        assert own.call(anyio.sleep, 0) is None
        client.portal = marker = object()
        assert client.portal is marker
        client.portal = None
        assert client.portal is own


def test_driver_built_field_by_field_logs_with_its_uuid_set_later(caplog):
    # Upstream's tests build drivers with object.__new__ and call __post_init__() themselves.
    driver = object.__new__(Echoes)
    driver.children = {}
    driver.__post_init__()
    driver.uuid = "later"
    with caplog.at_level("INFO"):
        driver.logger.info("hello")
    assert [(r.getMessage(), r.driver_uuid) for r in caplog.records] == [("hello", "later")]


@pytest.mark.parametrize(
    ("client_path", "message"),
    [
        ("jumpstarter.__main__.X", "'jumpstarter.__main__' is not a module of client classes"),
        ("jumpstarter.cli.X", "'jumpstarter.cli' is not a module of client classes"),
        ("jumpstarter_driver_demo.__main__.X", "'jumpstarter_driver_demo.__main__' is not a module of client classes"),
    ],
)
def test_a_hostile_exporter_cant_make_the_client_run_a_program(tmp_path, client_path, message):
    """Only client modules are imported: jumpstarter.__main__ would run the CLI (SystemExit) on import."""
    with exporter(naming(client_path), tmp_path) as address:
        with pytest.raises(ClientClassError, match=message):
            connect(address)
    assert "jumpstarter.__main__" not in sys.modules


def test_a_module_that_exits_on_import_is_a_client_class_error(tmp_path, monkeypatch, write):
    write("exiting_client.py", "raise SystemExit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("JUMPSTARTER_CLIENT_MODULES", "exiting_client")
    with exporter(naming("exiting_client.Client"), tmp_path) as address:
        with pytest.raises(ClientClassError, match=r"importing module 'exiting_client' .* failed: SystemExit: 3"):
            connect(address)


def test_the_allow_list_holds_the_modules_of_distributions_that_depend_on_jumpstarter(tmp_path, monkeypatch):
    """Driver packages are found by their requirements, in a wheel's METADATA or an egg's requires.txt; a package
    that only mentions jumpstarter (in its description) is not one."""
    from jumpstarter.client.allow import driver_package_modules

    def dist(folder: str, files: dict[str, str]) -> None:
        (tmp_path / folder).mkdir()
        for name, text in files.items():
            (tmp_path / folder / name).write_text(text)

    dist("wheel_driver-1.0.dist-info", {"METADATA": "Name: wheel-driver\nRequires-Dist: Jumpstarter>=0.9\n"})
    dist("egg_driver-1.0.egg-info", {"PKG-INFO": "Name: egg-driver\n", "requires.txt": "anyio\njumpstarter\n"})
    dist("mentions-1.0.dist-info", {"METADATA": "Name: mentions\nRequires-Dist: pyyaml\n\nWorks with jumpstarter.\n"})
    dist("neighbour-1.0.dist-info", {"METADATA": "Name: neighbour\nRequires-Dist: jumpstarter-extra\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    driver_package_modules.cache_clear()
    try:
        found = driver_package_modules()
    finally:
        driver_package_modules.cache_clear()
    assert {"wheel_driver", "egg_driver"} <= found
    assert not {"mentions", "neighbour"} & found


def test_a_driver_package_named_after_its_module_is_allowed_from_its_own_metadata(tmp_path, monkeypatch):
    """jumpstarter_driver_x comes from jumpstarter-driver-x: that one distribution is read, not every one; a namesake
    that doesn't depend on jumpstarter is no driver package."""
    from jumpstarter.client import allow

    for folder, metadata in {
        "named_driver-1.0.dist-info": "Name: named-driver\nRequires-Dist: jumpstarter\n",
        "named_other-1.0.dist-info": "Name: named-other\nRequires-Dist: pyyaml\n",
    }.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "METADATA").write_text(metadata)
    monkeypatch.syspath_prepend(str(tmp_path))

    def no_scan() -> frozenset[str]:
        raise AssertionError("every distribution was read")

    monkeypatch.setattr(allow, "driver_package_modules", no_scan)
    allow._namesake_is_a_driver_package.cache_clear()
    try:
        assert allow.allowed("named_driver.client")
        with pytest.raises(AssertionError, match="every distribution was read"):
            allow.allowed("named_other.client")  # not a driver package by its namesake: the full scan decides
    finally:
        allow._namesake_is_a_driver_package.cache_clear()
