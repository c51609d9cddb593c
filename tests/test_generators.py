"""Generators served to clients: batches for clients that ask for them, and how far a generator runs ahead.

No timings are asserted: a slow producer's first item is checked by causality (the generator waits for the
client to have it), lookahead by how far the generator got once the client stopped.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import grpc
import pytest

from jumpstarter.client.connection import Connection
from jumpstarter.common.utils import serve
from jumpstarter.common.wire import BATCH_KEY
from jumpstarter.driver import Driver, export
from jumpstarter.errors import DriverError, DriverTimeout
from jumpstarter.exporter.generators import DEFAULT_LOOKAHEAD
from jumpstarter.v1 import jumpstarter_pb2, jumpstarter_pb2_grpc
from jumpstarter.values import decode, decode_result

WAIT = 10  # seconds a generator waits for the client before it gives up (and the test fails)


@dataclass(kw_only=True)
class Lines(Driver):
    """Generators that record how far they got, as a console's lines() consumes a device's output."""

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.produced = 0
        self.closed = threading.Event()
        self.go = threading.Event()
        self.released: bool | None = None  # whether the client had the first item before WAIT ran out

    def _line(self) -> str:
        self.produced += 1
        return f"line {self.produced}"

    @export
    def lines(self):
        try:
            while True:
                yield self._line()
        finally:
            self.closed.set()

    @export(lookahead=0)
    def lines_in_step(self):
        try:
            while True:
                yield self._line()
        finally:
            self.closed.set()

    @export(lookahead=0)
    async def lines_in_step_async(self):
        try:
            while True:
                yield self._line()
        finally:
            self.closed.set()

    @export(lookahead=3)
    def lines_three_ahead(self):
        try:
            while True:
                yield self._line()
        finally:
            self.closed.set()

    @export
    async def count(self, n: int):
        for i in range(n):
            yield {"n": i, "half": i / 2}

    @export
    def slow(self):
        yield "first"
        self.released = self.go.wait(WAIT)
        yield "second"

    @export
    async def slow_async(self):
        yield "first"
        self.released = await asyncio.to_thread(self.go.wait, WAIT)
        yield "second"

    @export(lookahead=2)
    def slow_paced(self):
        yield "first"
        self.released = self.go.wait(WAIT)
        yield "second"

    @export
    async def then_unsendable(self):
        yield 1
        yield 2
        yield object()

    @export(lookahead=1)
    def then_fails(self):
        yield 1
        yield 2
        raise TimeoutError("sensor stopped answering")


def _messages(client, method: str, *args: object, batches: bool) -> list[jumpstarter_pb2.StreamingDriverCallResponse]:
    """A StreamingDriverCall's messages as a raw gRPC client gets them, asking for batches or not."""
    request = jumpstarter_pb2.StreamingDriverCallRequest(uuid=client.uuid, method=method)
    request.args.add().number_value = args[0] if args else 0
    stub = jumpstarter_pb2_grpc.ExporterServiceStub(client.connection.channel)
    return list(stub.StreamingDriverCall(request, metadata=((BATCH_KEY, "1"),) if batches else ()))


def test_clients_that_dont_ask_get_one_item_per_message_as_upstream_sends():
    with serve(Lines()) as client:
        messages = _messages(client, "count", 100, batches=False)
    assert len(messages) == 100
    assert all(not m.items and m.HasField("result") and m.uuid for m in messages)
    assert [decode_result(m) for m in messages] == [{"n": i, "half": i / 2} for i in range(100)]


def test_clients_that_ask_get_batches_while_the_generator_is_ahead():
    with serve(Lines()) as client:
        messages = _messages(client, "count", 100, batches=True)
        # an async generator that never waits is ahead by all it may be: the lookahead, and the item being sent
        assert len(messages[0].items) == DEFAULT_LOOKAHEAD + 1
        assert all(m.items and not m.HasField("result") for m in messages)
        assert [decode(v) for m in messages for v in m.items] == [{"n": i, "half": i / 2} for i in range(100)]
        # our client asks, and restores the ints of every item of a batch
        items = list(client.streamingcall("count", 1000))
        assert items == [{"n": i, "half": i / 2} for i in range(1000)]
        assert all(type(item["n"]) is int and type(item["half"]) is float for item in items)


@pytest.mark.parametrize("method", ["slow", "slow_async", "slow_paced"])
def test_a_slow_producers_first_item_goes_out_at_once(method):
    """The generator holds its second item until the client has the first: a batch waiting to fill up would
    keep the first item until the generator gave up waiting."""
    driver = Lines()
    with serve(driver) as client:
        items = client.streamingcall(method)
        assert next(items) == "first"
        driver.go.set()
        assert list(items) == ["second"]
    assert driver.released is True


def test_async_client_gets_a_slow_producers_first_item_at_once():
    driver = Lines()

    async def read(client) -> list[str]:
        got = []
        async for item in client.streamingcall_async("slow"):
            got.append(item)
            driver.go.set()
        return got

    with serve(driver) as client:
        assert asyncio.run(read(client)) == ["first", "second"]
    assert driver.released is True


@pytest.mark.parametrize("method", ["lines_in_step", "lines_in_step_async"])
def test_lookahead_0_produces_only_what_the_client_asked_for(method):
    driver = Lines()
    with serve(driver) as client:
        lines = client.streamingcall(method)
        assert [next(lines), next(lines)] == ["line 1", "line 2"]
        lines.close()  # the loop's break
        assert driver.closed.wait(WAIT)
        assert driver.produced == 2  # line 3 is still the device's


def test_lookahead_0_from_an_async_client():
    driver = Lines()

    async def read(client) -> list[str]:
        got = []
        async for line in client.streamingcall_async("lines_in_step"):
            got.append(line)
            if len(got) == 2:
                break
        return got

    with serve(driver) as client:
        assert asyncio.run(read(client)) == ["line 1", "line 2"]
        assert driver.closed.wait(WAIT)
        assert driver.produced == 2


def test_lookahead_n_runs_at_most_n_ahead_of_what_the_client_took():
    driver = Lines()
    with serve(driver) as client:
        lines = client.streamingcall("lines_three_ahead")
        taken = [next(lines) for _ in range(5)]
        lines.close()
        assert driver.closed.wait(WAIT)
    assert taken == [f"line {i}" for i in range(1, 6)]
    assert 5 <= driver.produced <= 5 + 3


def test_default_lookahead_runs_ahead():
    """What docs/drivers.md says of generators: without a declared lookahead a generator runs on while the
    transport takes its items (the client stops after two; the generator got further)."""
    driver = Lines()
    with serve(driver) as client:
        lines = client.streamingcall("lines")
        assert [next(lines), next(lines)] == ["line 1", "line 2"]
        lines.close()
        assert driver.closed.wait(WAIT)
    assert driver.produced > 2


def test_a_connection_made_by_hand_paces_declared_generators():
    driver = Lines()
    with serve(driver) as client:
        connection = Connection(client.connection.address)
        try:
            lines = connection.streamingcall(client.uuid, "", "lines_in_step", ())
            assert next(lines) == "line 1"
            lines.close()
            assert driver.closed.wait(WAIT)
        finally:
            connection.close()
    assert driver.produced == 1


def test_the_report_lists_declared_lookaheads_only():
    with serve(Lines()) as client:
        (report,) = client.connection.report().reports
    assert dict(report.methods_lookahead) == {
        "lines_in_step": 0,
        "lines_in_step_async": 0,
        "lines_three_ahead": 3,
        "slow_paced": 2,
        "then_fails": 1,
    }


def test_items_before_a_failure_arrive_then_the_error_batched_or_paced():
    with serve(Lines()) as client:
        seen = []
        with pytest.raises(DriverError, match="object can't be sent"):
            for item in client.streamingcall("then_unsendable"):
                seen.append(item)
        assert seen == [1, 2]
        seen = []
        with pytest.raises(DriverTimeout, match="sensor stopped answering"):
            for item in client.streamingcall("then_fails"):
                seen.append(item)
        assert seen == [1, 2]


def test_paced_calls_need_the_lease_like_any_other():
    from samples import leased

    with serve(Lines()) as client:
        holder = Connection(client.connection.address)
        try:
            with leased(holder, "someone else"):
                with pytest.raises(Exception, match="leased by someone else"):
                    next(client.streamingcall("lines_in_step"))
        finally:
            holder.close()


def test_lookahead_is_a_count_on_generators_only():
    with pytest.raises(ValueError, match="a count of items"):
        export(lookahead=-1)
    with pytest.raises(TypeError, match="is for generator methods"):

        @export(lookahead=0)
        def plain(self) -> int:
            return 1


def test_a_paced_call_must_start_with_the_call():
    from jumpstarter.v1 import paced_pb2, paced_pb2_grpc

    with serve(Lines()) as client:
        stub = paced_pb2_grpc.PacedCallServiceStub(client.connection.channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.PacedStreamingDriverCall(iter([paced_pb2.PacedRequest(wanted=3)])))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
