"""Copied into a temporary project by tests/test_upstream.py and run as `pytest --exporter ADDRESS`,
against upstream's exporter and against ours: the same calls, through our client and pytest plugin.

Numbers are compared by value: from an upstream exporter every number arrives as a float.
"""

import hashlib
import os

import anyio
import pytest

from jumpstarter.errors import DriverError, DriverInvalidArgument, DriverNotImplemented, DriverTimeout, MethodNotFound


def test_plain_method(custom):
    assert custom.execute("echo", ["hello"]) == "hello\n"


def test_values(board):
    assert board.add(2, 3) == 5
    assert board.describe() == {"name": "demo-1", "baudrate": 9600}
    assert board.echo({"list": [1, "two", None, True], "nested": {"x": 1.5}}) == {
        "list": [1, "two", None, True],
        "nested": {"x": 1.5},
    }
    text = "é☃😀x" * 100_000  # big text: our side encodes and parses it by hand (jumpstarter.common.textcalls)
    assert board.echo(text) == text


def test_async_method(board):
    assert board.wait(0.01) == 0.01


def test_generators(board):
    assert list(board.count(3)) == [0, 1, 2]
    assert list(board.ticks(3)) == [0, 1, 2]


def test_byte_stream(board):
    with board.stream("console") as stream:
        for chunk in (b"ping", bytes(range(256))):
            stream.send(chunk)
            assert stream.receive() == chunk
        stream.send_eof()
        with pytest.raises(anyio.EndOfStream):
            stream.receive()


def test_byte_stream_not_exported(board):
    with board.stream("describe") as stream, pytest.raises(MethodNotFound, match="describe"):
        stream.receive()


def test_upload(board):
    data = os.urandom(1_000_003)
    assert board.checksum(data) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert board.checksum(b"")["size"] == 0


def test_child(board):
    board.power.on()
    assert board.power.read() is True
    board.power.off()
    assert board.power.read() is False


@pytest.mark.parametrize(
    "kind, error",
    [
        ("value", DriverInvalidArgument),
        ("notimplemented", DriverNotImplemented),
        ("timeout", DriverTimeout),
        ("other", DriverError),
    ],
)
def test_errors(board, kind, error):
    with pytest.raises(error, match=f"^board.fail: {kind} boom$"):
        board.fail(kind, f"{kind} boom")
    assert board.add(1, 1) == 2  # the connection is still good


def test_method_not_exported(board):
    with pytest.raises(MethodNotFound, match="not_exported"):
        board.call("not_exported")


@pytest.mark.anyio
async def test_async_client(board):
    assert await board.call_async("add", 2, 3) == 5
    assert [n async for n in board.streamingcall_async("ticks", 2, 0.0)] == [0, 1]
    async with board.stream_async("console") as stream:
        await stream.send(b"async")
        assert await stream.receive() == b"async"
