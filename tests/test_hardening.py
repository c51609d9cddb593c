"""Hardening (issue 13): what one client can make an exporter hold or do, and how an exporter ends.

Malformed requests have their own module, test_malformed.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

import anyio
import grpc
import pytest
from samples import EXAMPLES

from jumpstarter.client import connect
from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export
from jumpstarter.errors import DriverError
from jumpstarter.exporter.process import ExporterProcess, ExporterStartError
from jumpstarter.v1 import jumpstarter_pb2, lease_pb2, lease_pb2_grpc

MIB = 1024 * 1024
BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"


def pythonpath(*folders: object) -> dict[str, str]:
    """An exporter's environment that imports drivers from ``folders`` (and keeps the PYTHONPATH the tests run
    with)."""
    return {"PYTHONPATH": os.pathsep.join([*map(str, folders), *filter(None, [os.environ.get("PYTHONPATH")])])}


# Item 15: how deep values nest -----------------------------------------------------------------------------------


def nested(kind: str, levels: int) -> object:
    value: object = 1
    for level in range(levels):
        as_list = kind == "list" or (kind == "mixed" and level % 2)
        value = [value] if as_list else {"k": value}
    return value


@dataclass(kw_only=True)
class Deep(Driver):
    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    def deep(self, kind: str, levels: int) -> object:
        return nested(kind, levels)

    @export
    def deep_items(self, levels: int):
        yield "fine"
        yield nested("list", levels)


@pytest.mark.parametrize("kind", ["list", "dict", "mixed"])
def test_values_nest_32_levels_both_ways_and_deeper_is_refused_where_sent(board_client, kind):
    deepest = nested(kind, 32)
    assert board_client.echo(deepest) == deepest  # there and back: an argument and a result
    step = r"(\[0\]|\['k'\])"
    with pytest.raises(TypeError, match=rf"^echo: argument 1{step}{{8}}\.\.\.: value nests deeper than 32 levels"):
        board_client.echo(nested(kind, 33))
    with pytest.raises(TypeError, match=r"value nests deeper than 32 levels .*\(jumpstarter.values.MAX_DEPTH\)"):
        board_client.echo(nested(kind, 60))
    loop: list = []
    loop.append(loop)
    with pytest.raises(TypeError, match="nests deeper than 32 levels"):  # was a RecursionError
        board_client.echo(loop)
    assert board_client.echo("next") == "next"
    from jumpstarter.values import MAX_DEPTH

    assert MAX_DEPTH == 32


def test_a_result_nested_too_deep_is_refused_by_the_exporter_naming_the_limit():
    with serve(Deep()) as client:
        assert client.call("deep", "dict", 32) == nested("dict", 32)
        for kind, levels in (("list", 33), ("list", 60), ("dict", 40)):  # 60 lists: "Exception deserializing response!"
            with pytest.raises(DriverError, match=r"^deep: .*value\[(0|'k')\].*nests deeper than 32 levels") as info:
                client.call("deep", kind, levels)
            assert "deserializing" not in str(info.value)
        items = client.streamingcall("deep_items", 40)
        assert next(items) == "fine"
        with pytest.raises(DriverError, match=r"nests deeper than 32 levels"):
            next(items)


# Item 7: a big request costs its sender, not everyone ------------------------------------------------------------

SIZER = """
    from dataclasses import dataclass
    from jumpstarter.driver import Driver, export

    @dataclass(kw_only=True)
    class Sizer(Driver):
        @classmethod
        def client(cls):
            return "jumpstarter.client.DriverClient"

        @export
        def size(self, values) -> int:
            return len(values)

        @export
        async def ping(self) -> str:
            return "pong"
    """
SIZER_YAML = """
    apiVersion: jumpstarter.dev/v1alpha1
    kind: ExporterConfig
    export:
      sizer:
        type: sizer.Sizer
    """


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def many_numbers_request(uuid: str, method: str, count: int) -> bytes:
    """A serialized DriverCallRequest whose one argument is a list of ``count`` numbers, made without encoding
    each of them here (that would take the test seconds)."""
    from google.protobuf.struct_pb2 import ListValue

    block = ListValue()
    block.extend([1.5] * 1000)
    values = block.SerializeToString() * (count // 1000)  # a ListValue is its repeated field: blocks concatenate
    arg = b"\x32" + _varint(len(values)) + values  # Value.list_value, field 6
    head = jumpstarter_pb2.DriverCallRequest(uuid=uuid, method=method).SerializeToString()
    return head + b"\x1a" + _varint(len(arg)) + arg  # DriverCallRequest.args, field 3


def test_a_big_request_does_not_stall_other_callers_and_the_limit_is_an_option(exporter_process, write):
    write("sizer.py", SIZER)
    config = write("sizer.yaml", SIZER_YAML)
    exporter = exporter_process(
        config, "--listen", "127.0.0.1:0", "--max-message-size", "24", env=pythonpath(config.parent)
    )
    with connect(exporter.address) as root, grpc.insecure_channel(exporter.address) as channel:
        sizer = root.children["sizer"]
        assert sizer.call("size", "x" * (20 * MIB)) == 20 * MIB  # more than the default 16 MiB: the option raised it
        big = many_numbers_request(str(sizer.uuid), "size", 1_200_000)  # 13 MB: a second or more of decoding
        raw = channel.unary_unary(
            "/jumpstarter.v1.ExporterService/DriverCall",
            response_deserializer=jumpstarter_pb2.DriverCallResponse.FromString,
        )
        assert sizer.call("ping") == "pong"
        future = raw.future(big, timeout=60)
        slowest, calls, started = 0.0, 0, time.monotonic()
        while not future.done():
            began = time.monotonic()
            assert sizer.call("ping") == "pong"
            slowest, calls = max(slowest, time.monotonic() - began), calls + 1
        took = time.monotonic() - started
        assert future.result().result.number_value == 1_200_000
    assert took > 0.3, "the big request was too quick to tell anything"
    # Stalled, one ping would wait out the whole decoding. Relative, so that a loaded machine slowing both alike
    # doesn't fail it: parsing the request still takes the event loop some 80 ms on a quiet one.
    assert calls >= 3 and slowest < took / 3, (
        f"a ping took {slowest:.2f} s while a big request was decoded ({calls} pings in {took:.1f} s)"
    )


def test_a_request_beyond_the_exporters_limit_is_refused_naming_it_and_how_to_raise_it(board_client):
    with pytest.raises(DriverError) as info:
        board_client.echo("x" * (16 * MIB + 1))
    message = str(info.value)
    assert "16 MiB" in message and "--max-message-size" in message and "JUMPSTARTER_MAX_MESSAGE_SIZE" in message
    assert board_client.echo("x" * (15 * MIB)) == "x" * (15 * MIB)


# Item 8: uploads nobody reads ------------------------------------------------------------------------------------


class Endless:
    """An upload source that never ends, counting the bytes taken from it."""

    def __init__(self, chunk: int) -> None:
        self.chunk, self.sent = b"u" * chunk, 0

    def __aiter__(self) -> Endless:
        return self

    async def __anext__(self) -> bytes:
        self.sent += len(self.chunk)
        return self.chunk


async def settled(sources: list[Endless], limit: float = 5.0) -> int:
    """The bytes taken from ``sources`` once that stops growing."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        total = sum(source.sent for source in sources)
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since > 0.5:
            break
        await anyio.sleep(0.05)
    return last


def test_an_upload_nobody_reads_holds_a_bounded_number_of_bytes(board, board_client):
    async def idle() -> None:
        source = Endless(1 * MIB)
        async with board_client.resource_async(source):
            sent = await settled([source])
            # 1 MiB held, and some 5-10 MiB in gRPC's flow control (it held 32 chunks: here 32 MiB)
            assert sent <= 20 * MIB, f"an idle upload took {sent / MIB:.0f} MiB"
            held = [upload.held for upload in board.resources.values()]
            assert held and max(held) <= 2 * MIB

    anyio.run(idle)
    assert board_client.checksum(b"after")["size"] == 5


def test_idle_uploads_share_a_bounded_total_and_a_reading_driver_still_gets_its_bytes(board, monkeypatch):
    monkeypatch.setenv("JUMPSTARTER_UPLOAD_MEMORY", "2")  # MiB, for all uploads
    monkeypatch.setenv("JUMPSTARTER_MAX_UPLOADS", "5")
    data = os.urandom(3 * MIB)

    async def main(client) -> None:
        sources = [Endless(1 * MIB) for _ in range(4)]
        async with contextlib_stack(client, sources):
            sent = await settled(sources)
            # 2 MiB held, and some 5 MiB each in gRPC's flow control (they held 32 chunks each: here 128 MiB)
            assert sent <= 64 * MIB, f"4 idle uploads took {sent / MIB:.0f} MiB"
            assert sum(upload.held for upload in board.resources.values()) <= 2 * MIB
            # the budget is spent, yet a driver that reads its upload gets every byte
            async with client.resource_async(data) as handle:
                got = await client.call_async("checksum", handle)
            assert got == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            async with client.resource_async(b"fifth"):
                with pytest.raises(DriverError, match=r"has 5 uploads open.*--max-uploads.*JUMPSTARTER_MAX_UPLOADS"):
                    async with client.resource_async(b"sixth"):
                        pass

    with serve(board) as client:
        anyio.run(main, client)
        assert client.checksum(b"after")["size"] == 5


def contextlib_stack(client, sources):
    from contextlib import AsyncExitStack

    class Stack(AsyncExitStack):
        async def __aenter__(self):
            await super().__aenter__()
            for source in sources:
                await self.enter_async_context(client.resource_async(source))
            return self

    return Stack()


# Item 9: state that grew without bound ---------------------------------------------------------------------------


def test_lease_holder_names_are_bounded_and_get_leases_keeps_working(board_client):
    from jumpstarter.client.lease import Lease, lease_records, try_lease

    stub = lease_pb2_grpc.LeaseServiceStub(board_client.connection.channel)
    for _ in range(33):  # 66 MiB of names: GetLeases' reply outgrew the message limit, for good
        call = stub.Lease(lease_pb2.LeaseRequest(holder="h" * (2 * MIB)))
        try:
            answer = next(call)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "holder name is 2097152 characters, more than the 1024 an exporter keeps" in err.details()
        else:
            stub.Release(lease_pb2.ReleaseRequest(lease_id=answer.lease_id))
        call.cancel()
    assert all(len(r.holder) <= 1024 for r in lease_records(board_client.connection))
    lease = try_lease(board_client.connection, "me@here: " + "tests/test_x.py::test_y[" + "p" * 3000 + "]")
    assert isinstance(lease, Lease)  # granted, its holder's name shortened
    with lease:
        (record,) = [r for r in lease_records(board_client.connection) if not r.ended]
        assert record.holder.startswith("me@here: tests/test_x.py") and record.holder.endswith("p]")
        assert len(record.holder) <= 1024 and "..." in record.holder


def test_idle_worker_threads_are_reclaimed(monkeypatch):
    from jumpstarter_driver_demo import Board

    from jumpstarter.exporter import threaded

    monkeypatch.setattr(threaded, "WORKER_IDLE", 0.2, raising=False)

    def workers() -> int:
        return sum(thread.name == "jumpstarter worker" for thread in threading.enumerate())

    before = workers()
    with serve(Board()) as client:
        most = 0

        async def many() -> list:
            calls = asyncio.gather(*(client.call_async("block", 2.0) for _ in range(60)))
            nonlocal most
            while not calls.done():  # the peak while they run: idle ones may be reclaimed as soon as they end
                most = max(most, workers())
                await asyncio.sleep(0.02)
            return await calls

        # Calls long enough to overlap on a loaded machine too; reclaiming is then polled for, not timed.
        assert anyio.run(many) == [2.0] * 60
        assert most >= 50, f"at most {most} worker threads at once for 60 blocking calls"
        deadline = time.monotonic() + 30
        while workers() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers() <= before, f"{workers()} worker threads left (were {before})"
        assert client.call("block", 0) == 0  # and a call after that still finds one


# Item 11: closing --------------------------------------------------------------------------------------------------

CLOSED: list[str] = []


@dataclass(kw_only=True)
class Closing(Driver):
    name: str
    fails: bool = False

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    def close(self) -> None:
        CLOSED.append(self.name)
        if self.fails:
            raise RuntimeError(f"{self.name} is stuck")  # before super().close(): the children are left to us
        super().close()


def test_every_driver_is_closed_and_every_failure_reported(caplog):
    CLOSED.clear()
    children: dict[str, Driver] = {"x": Closing(name="x"), "y": Closing(name="y", fails=True), "z": Closing(name="z")}
    root = Closing(name="root", fails=True, children=children)
    with serve(root) as client:
        assert client.children["y"].uuid
    assert sorted(CLOSED) == ["root", "x", "y", "z"]
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("closing the root driver (Closing) failed: root is stuck" in m for m in failures), failures
    assert any("closing y (Closing) failed: y is stuck" in m for m in failures), failures
    CLOSED.clear()  # the base's close() closes every child, and raises what failed after
    parent = Closing(name="p", children={"y": Closing(name="y", fails=True), "z": Closing(name="z")})
    with pytest.raises(RuntimeError, match="y is stuck"):
        parent.close()
    assert CLOSED == ["p", "y", "z"]


def test_jumpstarter_run_closes_every_driver_reports_every_failure_and_exits_non_zero(exporter_process, write):
    write(
        "closing_driver.py",
        """
        from dataclasses import dataclass
        from pathlib import Path
        from jumpstarter.driver import Driver

        @dataclass(kw_only=True)
        class Closing(Driver):
            marker: str
            fails: bool = False

            @classmethod
            def client(cls):
                return "jumpstarter.client.DriverClient"

            def close(self):
                Path(self.marker).write_text("closed")
                if self.fails:
                    raise OSError(f"{Path(self.marker).name} won't let go")
                super().close()
        """,
    )
    folder = write("markers/.keep", "").parent
    config = write(
        "closing.yaml",
        f"""
        apiVersion: jumpstarter.dev/v1alpha1
        kind: ExporterConfig
        export:
          first: {{type: closing_driver.Closing, config: {{marker: "{folder}/first", fails: true}}}}
          second:
            type: closing_driver.Closing
            config: {{marker: "{folder}/second", fails: true}}
            children:
              inner: {{type: closing_driver.Closing, config: {{marker: "{folder}/inner"}}}}
          third: {{type: closing_driver.Closing, config: {{marker: "{folder}/third"}}}}
        """,
    )
    exporter = exporter_process(config, "--listen", "127.0.0.1:0", env=pythonpath(config.parent))
    code = exporter.stop()
    output = exporter.output()
    assert sorted(p.name for p in folder.iterdir() if p.name != ".keep") == ["first", "inner", "second", "third"]
    assert code == 1, output
    assert "closing first (Closing) failed: first won't let go" in output
    assert "closing second (Closing) failed: second won't let go" in output
    assert "jumpstarter: 2 drivers failed to close" in output
    assert "Traceback" not in output  # one line each (-v adds the tracebacks)


# Item 12: one exporter per socket, frozen or not -------------------------------------------------------------------


def test_a_frozen_exporter_keeps_its_socket_and_a_dead_ones_is_taken_over(exporter_process, tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    first = exporter_process(BOARD_YAML, env=env)
    first.process.send_signal(signal.SIGSTOP)  # Ctrl-Z: it answers nothing, but it is alive and holds the board
    try:
        with pytest.raises(ExporterStartError, match=r"exited with code 1") as info:
            ExporterProcess.start(BOARD_YAML, env=env, timeout=20)
        message = str(info.value)
        assert f"an exporter (pid {first.process.pid}) already serves at {first.address}" in message, message
        assert "--listen" in message
    finally:
        first.process.send_signal(signal.SIGCONT)
    with connect(first.address) as root:
        assert root.board.add(1, 2) == 3
    first.kill()  # SIGKILL: its socket file stays, its lock goes with it
    second = exporter_process(BOARD_YAML, env=env)
    assert second.address == first.address
    with connect(second.address) as root:
        assert root.board.add(2, 2) == 4
