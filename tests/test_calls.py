"""Every kind of exported method, called through serve(): real gRPC over a private socket."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import anyio
import pytest

from jumpstarter.client import DriverClient
from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export
from jumpstarter.errors import (
    DriverConnectionError,
    DriverError,
    DriverInvalidArgument,
    DriverNotImplemented,
    DriverOSError,
    DriverTimeout,
    MethodNotFound,
)


def test_plain_call_returns_the_value_as_sent(board_client):
    value = {"text": "hé", "n": [1, 2.5, None, True], "nested": {"deep": [{"x": -3}]}}
    assert board_client.echo(value) == value
    assert board_client.echo("short") == "short"


def test_ints_stay_ints_between_our_peers(board_client):
    result = board_client.echo({"baud": 20000, "ratio": 2.0, "list": [1, 2, 3]})
    assert result == {"baud": 20000, "ratio": 2.0, "list": [1, 2, 3]}
    assert type(result["baud"]) is int and type(result["ratio"]) is float
    assert type(board_client.add(2, 3)) is int


def test_config_parameters_reach_the_driver(board_client):
    assert board_client.describe() == {"name": "demo-1", "baudrate": 9600}


def test_async_methods_and_children(board_client, board):
    power = board_client.power
    assert power.read() is False
    power.cycle()
    assert power.read() is True
    assert board.children["power"].history == ["off", "on"]


def test_generators_sync_and_async(board_client):
    assert list(board_client.count(5)) == [0, 1, 2, 3, 4]
    assert list(board_client.count(0)) == []
    assert list(board_client.ticks(3)) == [0, 1, 2]


def test_byte_stream_echoes_and_ends(board_client):
    with board_client.stream("console") as console:
        console.send(b"hello")
        assert console.receive() == b"hello"
        payload = bytes(range(256)) * 1024
        console.send(payload)
        received = b""
        while len(received) < len(payload):
            received += console.receive()
        assert received == payload
        console.send_eof()


def test_slow_sync_method_does_not_stall_the_exporter(board_client):
    """A blocking method runs off the event loop, so other calls are answered meanwhile."""
    done = threading.Event()

    def block() -> None:
        board_client.call("block", 1.0)
        done.set()

    thread = threading.Thread(target=block)
    started = time.monotonic()
    thread.start()
    time.sleep(0.1)
    assert board_client.echo("still here") == "still here"
    assert time.monotonic() - started < 0.8
    assert not done.is_set()
    thread.join()


def test_async_client_twins(board_client):
    async def main():
        board = board_client
        assert await board.echo_async({"a": 1}) == {"a": 1}
        assert [i async for i in board.streamingcall_async("ticks", 3, 0.0)] == [0, 1, 2]
        async with board.stream_async("console") as console:
            await console.send(b"ping")
            assert await console.receive() == b"ping"
            await console.send_eof()  # the echo's side ends too
            with pytest.raises(anyio.EndOfStream):
                await console.receive()
        with pytest.raises(DriverTimeout):
            await board.call_async("fail", "timeout", "late")

    anyio.run(main)


@pytest.mark.parametrize(
    ("kind", "error", "builtin"),
    [
        ("value", DriverInvalidArgument, ValueError),
        ("timeout", DriverTimeout, TimeoutError),
        ("connection", DriverConnectionError, ConnectionError),
        ("notimplemented", DriverNotImplemented, NotImplementedError),
        ("os", DriverOSError, OSError),
        ("other", DriverError, DriverError),
    ],
)
def test_remote_errors_carry_message_and_kind(board_client, kind, error, builtin):
    with pytest.raises(error) as info:
        board_client.fail(kind, f"the {kind} went wrong")
    assert isinstance(info.value, builtin)
    assert info.value.message == f"the {kind} went wrong"
    assert str(info.value) == f"fail: the {kind} went wrong"
    assert board_client.echo("next") == "next"


def test_bad_requests_are_answered_and_the_next_call_works(board_client):
    board = board_client
    with pytest.raises(MethodNotFound, match="'nope' of Board does not exist"):
        board.call("nope")
    with pytest.raises(MethodNotFound, match="not_exported.*is not exported"):
        board.call("not_exported")
    with pytest.raises(DriverInvalidArgument, match="add"):
        board.call("add", 1)
    with pytest.raises(DriverInvalidArgument, match="add.*'b'"):
        board.call("add", 1, "two")
    with pytest.raises(MethodNotFound, match=r"'count' is reached with streamingcall\(\), not call\(\)"):
        board.call("count", 3)
    with pytest.raises(TypeError, match=r"bytes value that isn't UTF-8 text can't be sent \(byte 1 is 0xff\)"):
        board.echo(b"r\xffw")
    assert board.echo(b"raw\x00") == "raw\x00"  # bytes travel as UTF-8 text, as upstream sends them
    with pytest.raises(TypeError, match="complex"):
        board.echo(1 + 2j)
    assert board.echo({1, 2}) == [1, 2]  # a set travels as a list, as upstream sends it
    assert board.add(40, 2) == 42


def test_generator_that_fails_midway_delivers_items_then_the_error():
    @dataclass(kw_only=True)
    class Flaky(Driver):
        @classmethod
        def client(cls) -> str:
            return "jumpstarter.client.DriverClient"

        @export
        def items(self):
            yield 1
            raise TimeoutError("sensor stopped answering")

    with serve(Flaky()) as client:
        seen = []
        with pytest.raises(DriverTimeout, match="sensor stopped answering"):
            for item in client.streamingcall("items"):
                seen.append(item)
        assert seen == [1]


def test_result_that_cant_be_sent_names_the_type():
    class Opaque:
        pass

    @dataclass(kw_only=True)
    class Leaky(Driver):
        @classmethod
        def client(cls) -> str:
            return "jumpstarter.client.DriverClient"

        @export
        def get(self):
            return {"handle": Opaque()}

    with serve(Leaky()) as client:
        with pytest.raises(DriverError, match="Opaque"):
            client.call("get")
        with pytest.raises(DriverError, match="Opaque"):
            client.call("get")


# The seed's driver, defined in a test module as upstream-style driver tests do.
class SeedDriver(Driver):
    @classmethod
    def client(cls) -> str:
        return f"{__name__}.SeedClient"

    @export
    def execute(self, command: str, args: list[str]) -> str:
        return " ".join([command, *args])


class SeedClient(DriverClient):
    def execute(self, command: str, args: list[str]) -> str:
        return self.call("execute", command, args)


def test_upstream_style_driver_test_runs_unchanged():
    with serve(SeedDriver()) as client:
        assert isinstance(client, SeedClient)
        assert client.execute("echo", ["a", "b"]) == "echo a b"


def test_the_seed_package_served_in_process():
    from jumpstarter_custom_driver import CustomClient, CustomDriver

    with serve(CustomDriver()) as client:
        assert isinstance(client, CustomClient)
        assert client.execute("echo", ["hello"]) == "hello\n"
        with pytest.raises(DriverError, match="exited with"):
            client.execute("false", [])


def test_serve_closes_the_drivers(board):
    with serve(board):
        assert not board.closed
    assert board.closed


def test_reset_reaches_children(board_client, board):
    board_client.power.on()
    board_client.reset()
    assert board.children["power"].state is False


def test_missing_child_suggests_the_name(board_client):
    with pytest.raises(AttributeError, match="has no child 'powr'.*did you mean 'power'"):
        board_client.powr  # noqa: B018


@dataclass(kw_only=True)
class Sensor(Driver):
    """A sync generator that records how far it ran and whether it was closed."""

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.produced = 0
        self.closed_generator = threading.Event()

    @export
    def readings(self):
        try:
            while True:
                self.produced += 1
                yield self.produced
        finally:
            self.closed_generator.set()

    @export
    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def test_endless_sync_generator_is_closed_when_the_client_stops_reading():
    sensor = Sensor()
    with serve(sensor) as client:
        readings = client.streamingcall("readings")
        assert [next(readings) for _ in range(3)] == [1, 2, 3]
        readings.close()
        assert sensor.closed_generator.wait(5), "the generator was left running"
        assert client.call("slow", 0) == 0


def test_concurrent_sync_calls_run_in_parallel():
    with serve(Sensor()) as client:
        started = time.monotonic()
        threads = [threading.Thread(target=client.call, args=("slow", 0.5)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert time.monotonic() - started < 2.0


def test_uploads_reach_the_driver_and_mistakes_are_named(board_client):
    """Resource streams: bytes sent with resource_async() for a call that reads them with self.resource()."""
    import bz2
    import gzip
    import hashlib
    import lzma

    from jumpstarter_driver_demo.client import Chunks

    data = bytes(range(256)) * 5000
    assert board_client.checksum(data) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    async def chunks():
        yield b"from an async "
        yield b"iterable"

    async def handles():
        async with board_client.resource_async(chunks()) as handle:
            assert handle["kind"] == "client_stream"
            assert await board_client.call_async("checksum", handle) == {
                "size": 22,
                "sha256": hashlib.sha256(b"from an async iterable").hexdigest(),
            }
            with pytest.raises(DriverInvalidArgument, match="no upload .* is waiting for Board"):
                await board_client.call_async("checksum", handle)  # an upload is read once
        async with board_client.resource_async(chunks()) as unused:  # a call that never reads it: no hang
            assert await board_client.call_async("add", 1, 2) == 3
        presigned = {
            "kind": "presigned_request",
            "url": "http://127.0.0.1:9/image?sig=secret",
            "method": "GET",
            "headers": {},
        }
        with pytest.raises(DriverError, match=r"presigned HTTP GET of http://127.0.0.1:9/image\?\[REDACTED\] failed"):
            await board_client.call_async("checksum", presigned)
        with pytest.raises(DriverInvalidArgument, match="'not a handle' is not a resource handle"):
            await board_client.call_async("checksum", "not a handle")
        for encoding, compress in (("gzip", gzip.compress), ("xz", lzma.compress), ("bz2", bz2.compress)):
            async with board_client.resource_async(Chunks(compress(b"packed" * 5000)), encoding) as packed:
                assert (await board_client.call_async("checksum", packed))["size"] == 30000, encoding
        with pytest.raises(NotImplementedError, match="content encoding 'zstd' is not supported"):
            async with board_client.resource_async(chunks(), content_encoding="zstd"):
                pass
        return unused

    assert anyio.run(handles)["uuid"]
    assert board_client.add(2, 2) == 4


def test_uploads_from_ordinary_test_code_bytes_a_path_or_a_binary_file(board_client, tmp_path):
    import hashlib

    data = b"\x7fELF" + bytes(range(256)) * 1000
    image = tmp_path / "image.bin"
    image.write_bytes(data)
    expected = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def upload(source):
        with board_client.portal.wrap_async_context_manager(board_client.resource_async(source)) as handle:
            return board_client.call("checksum", handle)

    assert upload(data) == upload(bytearray(data)) == upload(image) == upload(str(image)) == expected
    with image.open("rb") as file:
        assert upload(file) == expected
        assert not file.closed  # the caller's file stays the caller's
    with pytest.raises(TypeError, match=r"can't upload a file opened as text .*open it in binary mode, 'rb'"):
        with image.open() as text:
            upload(text)
    with pytest.raises(TypeError, match=r"can't upload a int: pass bytes, a path, a file opened with 'rb'"):
        upload(42)
    with pytest.raises(FileNotFoundError, match=r"can't upload '.*missing.bin': No such file"):
        upload(tmp_path / "missing.bin")
    assert board_client.add(1, 1) == 2  # nothing left half-open


def test_an_upload_is_refused_while_someone_else_holds_the_lease(board_client):
    from samples import leased

    from jumpstarter.client import connect
    from jumpstarter.errors import LeaseError

    trusted = frozenset({"jumpstarter_driver_demo.client.BoardClient", "jumpstarter_driver_demo.client.PowerClient"})
    with connect(board_client.connection.address, trusted=trusted) as other, leased(other.connection, "other"):
        with pytest.raises(LeaseError, match="leased by other"):
            board_client.checksum(b"not now")


def test_open_stream_and_log_stream_as_upstream_clients_use_them(board, caplog):
    """open_stream() stays open until close() (or the connection's end); log_stream() brings the exporter's logs."""
    with serve(board) as client:
        console = client.open_stream("console")
        console.send(b"kept open")
        assert console.receive() == b"kept open"
        client.close()
        with pytest.raises(anyio.ClosedResourceError):
            console.send(b"after close")
        caplog.set_level("INFO", logger="jumpstarter.drivers")  # the in-process exporter's side: let INFO through
        with caplog.at_level("INFO", logger="exporter:driver"), client.log_stream():
            deadline = time.monotonic() + 5
            while not [r for r in caplog.records if r.name == "exporter:driver"]:
                client.power.on()  # logs "power on" on the exporter
                assert time.monotonic() < deadline, "no exporter log record arrived"
                time.sleep(0.05)
        remote = [r for r in caplog.records if r.name == "exporter:driver"]
        assert remote[0].getMessage() == "power on" and remote[0].levelname == "INFO"
        left_open = client.open_stream("console")
    with pytest.raises(anyio.ClosedResourceError):  # the connection's end closed it
        left_open.send(b"x")


def test_exportstream_under_asynccontextmanager_is_refused_when_the_driver_is_built():
    from contextlib import asynccontextmanager

    from jumpstarter.driver import exportstream

    @dataclass(kw_only=True)
    class Console(Driver):
        @classmethod
        def client(cls) -> str:
            return "jumpstarter.client.DriverClient"

        @asynccontextmanager
        @exportstream
        async def connect(self):
            yield None

    with pytest.raises(TypeError, match=r"Console.connect: @exportstream must be the outer decorator, above @asyncc"):
        Console()
