"""Upstream's client helpers: click groups from the driver's descriptions, ``blocking`` adapters, the flasher."""

# These tests call as upstream's driver packages and their tests do: loose argument types, methods patched.
# mypy: disable-error-code="arg-type, assignment"

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import click
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from click.testing import CliRunner, Result

from jumpstarter.client import flasher
from jumpstarter.client.adapters import blocking
from jumpstarter.client.decorators import DriverClickGroup, driver_click_command, driver_click_group
from jumpstarter.client.flasher import FlasherClient
from jumpstarter.common.exceptions import ArgumentError
from jumpstarter.driver.flasher import FlasherInterface
from jumpstarter.streams.encoding import Compression
from jumpstarter.streams.progress import ProgressAttribute


def run(cli: click.Command, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def described(description: str | None = None, **methods: str) -> SimpleNamespace:
    """A client as the helpers see one: its description and per-method help from the exporter's report."""
    return SimpleNamespace(description=description, methods_description=methods)


# driver_click_group / DriverClickGroup ---------------------------------------------------------------------


def power_cli(client: Any, calls: list[str]) -> DriverClickGroup:
    @driver_click_group(client)
    def base() -> None:
        """Generic power interface"""

    @base.command()
    def on() -> None:
        """Power on"""
        calls.append("on")

    @base.command(name="cycle-now")
    @click.option("--wait", type=int, default=2)
    def cycle(wait: int) -> None:
        """Power cycle"""
        calls.append(f"cycle {wait}")

    @base.command()
    def read_state() -> None:
        """Read the state"""
        calls.append("read")

    return base


def test_group_without_descriptions_keeps_click_help_and_runs_commands():
    calls: list[str] = []
    cli = power_cli(described(), calls)
    assert isinstance(cli, DriverClickGroup) and cli.name == "base"
    result = run(cli, "--help")
    assert result.exit_code == 0
    assert "Generic power interface" in result.output
    assert "Power on" in result.output and "Power cycle" in result.output
    assert sorted(cli.commands) == ["cycle-now", "on", "read-state"]
    assert run(cli, "on").exit_code == 0
    assert run(cli, "cycle-now", "--wait", "5").exit_code == 0
    assert run(cli, "read-state").exit_code == 0
    assert calls == ["on", "cycle 5", "read"]


def test_driver_description_replaces_the_group_help():
    cli = power_cli(described("Relay board in rack 3"), [])
    output = run(cli, "--help").output
    assert "Relay board in rack 3" in output
    assert "Generic power interface" not in output


def test_description_beats_help_argument_which_beats_the_docstring():
    def group(client: Any) -> click.Group:
        @driver_click_group(client, help="From help=")
        def base() -> None:
            """From the docstring"""

        return base

    assert group(described()).help == "From help="
    assert group(described("From the exporter")).help == "From the exporter"


def test_group_without_docstring_or_description_has_no_help():
    @driver_click_group(described())
    def base() -> None:
        pass

    assert base.help is None
    assert run(base, "--help").exit_code == 0


def test_methods_description_replaces_command_help_by_command_name():
    client = described(on="Switch the DUT's supply on", **{"cycle-now": "Off, wait, on", "read-state": "Is it on?"})
    cli = power_cli(client, [])
    output = run(cli, "--help").output
    assert "Switch the DUT's supply on" in output and "Power on" not in output
    assert "Off, wait, on" in output and "Power cycle" not in output
    assert "Is it on?" in output and "Read the state" not in output
    assert "Off, wait, on" in run(cli, "cycle-now", "--help").output


def test_methods_description_keys_are_not_python_names():
    # the lookup is by CLI name: "read_state" (the exported method) does not match the command "read-state"
    cli = power_cli(described(read_state="not used"), [])
    assert "Read the state" in run(cli, "--help").output


def test_bare_command_decorator_registers_with_description():
    calls: list[str] = []

    @driver_click_group(described(status="From the exporter"))
    def base() -> None:
        """Group"""

    @base.command
    def status() -> None:
        """From the docstring"""
        calls.append("status")

    assert isinstance(status, click.Command) and base.commands["status"] is status
    assert status.help == "From the exporter"
    assert run(base, "status").exit_code == 0 and calls == ["status"]


def test_positional_command_name_is_the_lookup_key():
    @driver_click_group(described(disk="Resize the disk"))
    def base() -> None:
        pass

    @base.command("disk")
    def resize_disk() -> None:
        """Docstring"""

    assert base.commands["disk"].help == "Resize the disk"


def test_group_parameters_from_decorators_keep_their_order_and_run():
    seen: list[Any] = []

    @driver_click_group(described())
    @click.option("--log-level", expose_value=False, callback=lambda ctx, param, value: seen.append(value))
    @click.argument("first")
    @click.argument("second")
    def base(first: str, second: str) -> None:
        seen.append((first, second))

    @base.command()
    def noop() -> None:
        seen.append("noop")

    assert [p.name for p in base.params] == ["log_level", "first", "second"]
    assert run(base, "--log-level", "DEBUG", "a", "b", "noop").exit_code == 0
    assert seen == ["DEBUG", ("a", "b"), "noop"]


def test_clients_without_description_attributes_work():
    cli = power_cli(object(), [])
    assert "Generic power interface" in run(cli, "--help").output
    assert run(cli, "on").exit_code == 0


def test_subgroups_are_plain_click_groups_and_nest():
    @driver_click_group(described())
    def base() -> None:
        pass

    @base.group()
    def resize() -> None:
        """Resize resources"""

    @resize.command(name="disk")
    @click.argument("size")
    def resize_disk(size: str) -> None:
        click.echo(f"disk {size}")

    result = run(base, "resize", "disk", "20G")
    assert result.exit_code == 0 and result.output == "disk 20G\n"


def test_groups_nest_as_a_composite_client_builds_them():
    @driver_click_group(described("The board"))
    def root() -> None:
        """Generic composite device"""

    root.add_command(power_cli(described("The relay"), []), "power")
    output = run(root, "--help").output
    assert "The board" in output and "power" in output and "The relay" in output
    assert run(root, "power", "on").exit_code == 0


# driver_click_command --------------------------------------------------------------------------------------


def ssh_cli(client: Any, seen: list[Any], **kwargs: Any) -> click.Command:
    @driver_click_command(client, context_settings={"ignore_unknown_options": True}, **kwargs)
    @click.option("--direct", is_flag=True)
    @click.argument("args", nargs=-1)
    def ssh(direct: bool, args: tuple[str, ...]) -> None:
        """Run SSH (docstring)"""
        seen.append((direct, args))

    return ssh


def test_command_help_from_description_else_help_argument_else_docstring():
    assert ssh_cli(described(), []).help == "Run SSH (docstring)"
    assert ssh_cli(described(), [], help="Run SSH command with arguments").help == "Run SSH command with arguments"
    command = ssh_cli(described("SSH into the DUT"), [], help="Run SSH command with arguments")
    assert command.help == "SSH into the DUT"
    assert "SSH into the DUT" in run(command, "--help").output


def test_command_runs_with_its_options_and_arguments():
    seen: list[Any] = []
    command = ssh_cli(described(), seen)
    assert command.name == "ssh"
    assert run(command, "--direct", "uname", "-a").exit_code == 0
    assert seen == [(True, ("uname", "-a"))]


# blocking --------------------------------------------------------------------------------------------------


@dataclass
class PortalClient:
    """What ``blocking`` needs of a client: a portal running an event loop."""

    portal: BlockingPortal
    events: list[str] = field(default_factory=list)


@pytest.fixture
def portal_client() -> Iterator[PortalClient]:
    with start_blocking_portal() as portal:
        yield PortalClient(portal)


@blocking
@asynccontextmanager
async def adapter(*, client: PortalClient, prefix: str) -> AsyncIterator[str]:
    """An adapter as driver packages write them."""
    await anyio.sleep(0)
    client.events.append(f"enter in {threading.current_thread().name}")
    try:
        yield f"{prefix}-value"
    except ValueError as exc:
        client.events.append(f"saw {exc}")
        raise
    finally:
        client.events.append("exit")


def test_blocking_runs_the_async_adapter_on_the_client_portal(portal_client):
    with adapter(client=portal_client, prefix="p") as value:
        assert value == "p-value"
        assert portal_client.events == [f"enter in {portal_thread_name(portal_client.portal)}"]
    assert portal_client.events[-1] == "exit"


def portal_thread_name(portal: BlockingPortal) -> str:
    return portal.call(lambda: threading.current_thread().name)


def test_blocking_passes_an_error_in_the_body_to_the_adapter(portal_client):
    with pytest.raises(ValueError, match="boom"):
        with adapter(client=portal_client, prefix="p"):
            raise ValueError("boom")
    assert portal_client.events[1:] == ["saw boom", "exit"]


def test_blocking_keeps_the_adapter_name_and_the_async_original():
    assert adapter.__name__ == "adapter"
    assert adapter.__doc__ == "An adapter as driver packages write them."
    assert hasattr(adapter.__wrapped__(client=None, prefix="x"), "__aenter__")


def test_blocking_needs_client_as_a_keyword(portal_client):
    with pytest.raises(TypeError, match="client="):
        with adapter(prefix="p"):  # type: ignore[call-arg]
            pass


# FlasherInterface ------------------------------------------------------------------------------------------


def test_flasher_interface_names_the_flasher_client_and_needs_both_methods():
    assert FlasherInterface.client() == "jumpstarter.client.flasher.FlasherClient"

    class FlashOnly(FlasherInterface):
        def flash(self, source: Any, target: str | None = None) -> None:
            pass

    with pytest.raises(TypeError, match="abstract"):
        FlashOnly()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="abstract"):
        FlasherInterface()  # type: ignore[abstract]


# FlasherClient ---------------------------------------------------------------------------------------------


class FakeConnection:
    """Stands in for an exporter: records calls, takes uploads, and sends a dump to write streams."""

    def __init__(self, portal: BlockingPortal, dump_data: bytes = b"") -> None:
        self._portal = portal
        self.dump_data = dump_data
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.uploads: list[tuple[bytes, str | None]] = []

    def portal(self) -> BlockingPortal:
        return self._portal

    def call(self, uuid: str, target: str, method: str, args: tuple[Any, ...]) -> Any:
        self.calls.append((method, args))
        return f"{method} done"

    @asynccontextmanager
    async def resource_async(
        self, uuid: str, target: str, stream: Any, content_encoding: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        if isinstance(stream, flasher._FileWriteObjectStream):
            for start in range(0, len(self.dump_data), 3):
                await stream.send(self.dump_data[start : start + 3])
            await stream.send_eof()
        else:
            assert stream.extra(ProgressAttribute.total) == float(stream.total)
            chunks = []
            while True:
                try:
                    chunks.append(await stream.receive())
                except anyio.EndOfStream:
                    break
            self.uploads.append((b"".join(chunks), content_encoding))
        yield {"kind": "client_stream", "uuid": f"upload-{len(self.uploads)}"}


@pytest.fixture
def connection() -> Iterator[FakeConnection]:
    with start_blocking_portal() as portal:
        yield FakeConnection(portal, dump_data=b"dumped image")


@pytest.fixture
def client(connection: FakeConnection) -> FlasherClient:
    return FlasherClient(uuid="flasher-uuid", connection=connection)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "image.raw"
    path.write_bytes(b"x" * 100_000 + b"end")
    return path


def test_parse_path_tells_urls_from_local_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert flasher._parse_path("http://example.com/a.img") == (None, "http://example.com/a.img")
    url = "https://example.com/a.img?token=abc&expires=1"
    assert flasher._parse_path(url) == (None, url)
    assert flasher._parse_path("images/a.img") == (tmp_path / "images" / "a.img", None)
    assert flasher._parse_path(tmp_path / "a.img") == (tmp_path / "a.img", None)
    # as upstream's base client: OCI references and other schemes are not special, they are paths
    local, url = flasher._parse_path("oci://quay.io/org/image:tag")
    assert url is None and local is not None and local.is_absolute()
    assert flasher._parse_path("ftp://host/a.img")[1] is None


def test_flash_uploads_a_local_file_and_calls_flash_with_its_handle(client, connection, image, tmp_path, monkeypatch):
    assert client.flash(image) == "flash done"
    assert connection.uploads == [(image.read_bytes(), None)]
    assert connection.calls == [("flash", ({"kind": "client_stream", "uuid": "upload-1"}, None))]
    monkeypatch.chdir(tmp_path)
    client.flash("image.raw", target="boot", compression=Compression.GZIP)
    assert connection.uploads[1] == (image.read_bytes(), Compression.GZIP)
    assert connection.calls[1][1][1] == "boot"


def test_flash_of_a_missing_file_fails_before_calling(client, connection, tmp_path):
    with pytest.raises(FileNotFoundError):
        client.flash(tmp_path / "missing.raw")
    with pytest.raises(FileNotFoundError):
        client.flash("oci://quay.io/org/image:tag")
    assert connection.calls == []


def test_flash_of_a_url_hands_the_exporter_a_presigned_get(client, connection):
    client.flash("https://example.com/image.raw", target="root")
    handle = {"kind": "presigned_request", "headers": {}, "url": "https://example.com/image.raw", "method": "GET"}
    assert connection.calls == [("flash", (handle, "root"))]
    assert connection.uploads == []
    json.dumps(handle)  # a handle is plain JSON, as calls carry it


def test_compression_is_ignored_with_a_warning_for_urls(client, connection, image):
    with pytest.warns(UserWarning, match="compression parameter is ignored for HTTP URLs"):
        client.flash("http://example.com/image.raw", compression=Compression.XZ)
    with pytest.warns(UserWarning, match="compression parameter is ignored"):
        client.dump("http://example.com/dump.raw", compression=Compression.XZ)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.flash(image, compression=Compression.XZ)


def test_flash_of_a_mapping_flashes_each_image_to_its_target(client, connection, image):
    results = client.flash({"boot": image, "root": "https://example.com/root.raw"})
    assert results == {"boot": "flash done", "root": "flash done"}
    assert [(method, args[1]) for method, args in connection.calls] == [("flash", "boot"), ("flash", "root")]
    assert connection.calls[1][1][0]["url"] == "https://example.com/root.raw"
    with pytest.raises(ArgumentError, match="'target' parameter is not valid when flashing multiple images"):
        client.flash({"boot": image}, target="boot")


def test_dump_writes_the_exporter_data_into_a_local_file(client, connection, tmp_path):
    out = tmp_path / "dump.raw"
    assert client.dump(out, target="boot") == "dump done"
    assert out.read_bytes() == b"dumped image"
    assert connection.calls == [("dump", ({"kind": "client_stream", "uuid": "upload-0"}, "boot"))]


def test_dump_to_a_url_hands_the_exporter_a_presigned_put(client, connection):
    client.dump("https://example.com/dump.raw")
    handle = {"kind": "presigned_request", "headers": {}, "url": "https://example.com/dump.raw", "method": "PUT"}
    assert connection.calls == [("dump", (handle, None))]


def test_a_subclass_takes_oci_references_before_the_base_client(connection, image):
    class OciFlasherClient(FlasherClient):
        def flash(self, path: Any, *, target: str | None = None, compression: Any = None) -> Any:
            if isinstance(path, str) and path.startswith("oci://"):
                return self.call("flash_oci", path, target)
            return super().flash(path, target=target, compression=compression)

    client = OciFlasherClient(uuid="u", connection=connection)
    client.flash("oci://quay.io/org/image:tag", target="root")
    client.flash(image)
    assert [method for method, _ in connection.calls] == ["flash_oci", "flash"]
    assert connection.calls[0][1] == ("oci://quay.io/org/image:tag", "root")


@pytest.mark.anyio
async def test_upload_and_dump_streams_alone(tmp_path):
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    stream = flasher._AsyncIteratorStream(iterator=chunks(), total=2)
    assert stream.extra(ProgressAttribute.total) == 2.0
    assert [await stream.receive(), await stream.receive()] == [b"a", b"b"]
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()
    with pytest.raises(anyio.BrokenResourceError):
        await stream.send(b"x")
    await stream.aclose()
    assert flasher._AsyncIteratorStream(iterator=chunks()).extra_attributes == {}

    out = tmp_path / "out.raw"
    sink = flasher._FileWriteObjectStream(path=out)
    await sink.aclose()  # nothing opened yet
    assert not out.exists()
    await sink.send(b"he")
    await sink.send(b"llo")
    await sink.aclose()
    assert out.read_bytes() == b"hello"
    with pytest.raises(anyio.EndOfStream):
        await sink.receive()


@pytest.mark.anyio
async def test_url_adapter_original_gives_the_presigned_request():
    async with flasher._http_url_adapter.__wrapped__(client=None, url="http://h/x", mode="wb") as handle:
        assert handle == {"kind": "presigned_request", "headers": {}, "url": "http://h/x", "method": "PUT"}


class CliFlasher(FlasherClient):
    """A FlasherClient whose flash/dump only record what the CLI asked."""

    def flash(self, path: Any, *, target: str | None = None, compression: Any = None) -> Any:
        self.__dict__.setdefault("asked", []).append(("flash", path, target, compression))

    def dump(self, path: Any, *, target: str | None = None, compression: Any = None) -> Any:
        self.__dict__.setdefault("asked", []).append(("dump", path, target, compression))


@pytest.fixture
def cli_client(connection: FakeConnection) -> CliFlasher:
    return CliFlasher(uuid="u", connection=connection, methods_description={"flash": "Write an image"})


def test_cli_flash_and_dump(cli_client):
    cli = cli_client.cli()
    assert run(cli, "flash", "/tmp/a.raw").exit_code == 0
    assert run(cli, "flash", "-t", "boot:/tmp/b.raw", "--target", "root:http://h/r.raw").exit_code == 0
    assert run(cli, "flash", "a.raw", "--compression", "GZIP").exit_code == 0
    assert run(cli, "dump", "/tmp/out.raw", "--target", "rootfs", "--compression", "xz").exit_code == 0
    assert cli_client.asked == [
        ("flash", "/tmp/a.raw", None, None),
        ("flash", {"boot": "/tmp/b.raw", "root": "http://h/r.raw"}, None, None),
        ("flash", "a.raw", None, Compression.GZIP),
        ("dump", "/tmp/out.raw", "rootfs", Compression.XZ),
    ]


def test_cli_flash_argument_errors(cli_client):
    result = run(cli_client.cli(), "flash", "-t", "no-colon")
    assert result.exit_code != 0 and "Invalid target spec 'no-colon', expected name:file" in result.output
    result = run(cli_client.cli(), "flash")
    assert result.exit_code != 0 and "FILE argument is required unless --target/-t is used" in result.output
    assert run(cli_client.cli(), "flash", "a.raw", "--compression", "rar").exit_code == 2
    assert "asked" not in cli_client.__dict__


def test_cli_help_comes_from_the_driver_descriptions(cli_client):
    output = run(cli_client.cli(), "--help").output
    assert "Generic flasher interface" in output and "Write an image" in output
    assert "Dump image from DUT to file" in output
    cli_client.description = "eMMC of the board"
    assert "eMMC of the board" in run(cli_client.cli(), "--help").output


# A flasher served for real ---------------------------------------------------------------------------------


def memory_flasher() -> Any:
    from jumpstarter.driver import Driver, export

    @dataclass(kw_only=True)
    class MemoryFlasher(FlasherInterface, Driver):
        """Keeps flashed images in memory."""

        images: dict[str | None, bytes] = field(default_factory=dict)

        @export
        async def flash(self, source: Any, target: str | None = None) -> int:
            async with self.resource(source) as data:
                self.images[target] = b"".join([chunk async for chunk in data])
            return len(self.images[target])

        @export
        async def dump(self, target: Any, partition: str | None = None) -> None:
            raise NotImplementedError

    return MemoryFlasher(description="Flash memory of the demo board")


def test_flash_to_a_served_driver(image):
    from jumpstarter.common.utils import serve

    driver = memory_flasher()
    with serve(driver) as client:
        assert isinstance(client, FlasherClient)
        assert client.flash(image, target="boot") == image.stat().st_size
        assert client.flash({"a": image, "b": image}) == {"a": image.stat().st_size, "b": image.stat().st_size}
        assert "Flash memory of the demo board" in run(client.cli(), "--help").output
    assert driver.images["boot"] == image.read_bytes() == driver.images["b"]
