"""What one client can make an exporter hold in memory (issue 27): paced generator calls, uploads.

The exporter runs as a subprocess whose RSS is watched: a test that fails kills it past a threshold rather
than let it take the machine.
"""

from __future__ import annotations

import gc
import hashlib
import os
import queue
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack

import anyio
import grpc
import pytest
from samples import EXAMPLES, rss

from jumpstarter.client import connect
from jumpstarter.common.utils import serve
from jumpstarter.exporter.generators import BUFFER_BYTES, BUFFER_ITEMS, MAX_ASK_AHEAD
from jumpstarter.exporter.process import ExporterProcess
from jumpstarter.v1 import jumpstarter_pb2, paced_pb2, paced_pb2_grpc
from jumpstarter.values import encode_args

MIB = 1024 * 1024
KIB = 1024
BOARD_YAML = EXAMPLES / "jumpstarter-driver-demo" / "board.yaml"

FLOOD = """
    import threading
    from dataclasses import dataclass
    from jumpstarter.driver import Driver, export

    counts = {"produced": 0, "closed": 0}
    lock = threading.Lock()

    def count(key):
        with lock:
            counts[key] += 1

    @dataclass(kw_only=True)
    class Flood(Driver):
        @classmethod
        def client(cls):
            return "jumpstarter.client.DriverClient"

        @export
        def blobs(self, size: int):
            chunk = "x" * size
            try:
                while True:
                    count("produced")
                    yield chunk
            finally:
                count("closed")

        @export
        async def ablobs(self, size: int):
            chunk = "x" * size
            try:
                while True:
                    count("produced")
                    yield chunk
            finally:
                count("closed")

        @export
        def counts(self) -> dict:
            with lock:
                return dict(counts)
    """
FLOOD_YAML = """
    apiVersion: jumpstarter.dev/v1alpha1
    kind: ExporterConfig
    export:
      flood:
        type: flood.Flood
    """


class Watched:
    """An exporter subprocess and its drivers' counts, killed once its RSS grows past ``limit`` bytes."""

    def __init__(self, exporter: ExporterProcess, limit: int = 400 * MIB) -> None:
        self.exporter, self.pid = exporter, exporter.process.pid
        self.base, self.limit, self.peak = rss(self.pid), limit, 0
        self.root = connect(exporter.address)
        self.flood = self.root.children["flood"]

    def check(self) -> None:
        grown = rss(self.pid) - self.base
        self.peak = max(self.peak, grown)
        if grown > self.limit:
            self.exporter.kill()
            pytest.fail(f"the exporter grew by {grown / MIB:.0f} MiB (killed past {self.limit / MIB:.0f} MiB)")

    def counts(self) -> dict:
        self.check()
        return self.flood.call("counts")

    def settled(self, key: str, most: int, limit: float = 20.0) -> int:
        """``counts()[key]`` once it has stopped growing; fails past ``most`` (which an unbounded one reaches)."""
        last, since, deadline = -1, time.monotonic(), time.monotonic() + limit
        while time.monotonic() < deadline:
            value = self.counts()[key]
            assert value <= most, f"{key} reached {value}, more than {most}"
            if value != last:
                last, since = value, time.monotonic()
            elif time.monotonic() - since > 1.0:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{key} kept changing for {limit} s: {last}")

    def wait_for(self, key: str, value: int, limit: float = 20.0) -> None:
        deadline = time.monotonic() + limit
        while (got := self.counts()[key]) < value:
            assert time.monotonic() < deadline, f"{key} is {got} after {limit} s, not {value}"
            time.sleep(0.1)


@pytest.fixture
def flood(exporter_process, write) -> Iterator[Callable[[], Watched]]:
    write("flood.py", FLOOD)
    config = write("flood.yaml", FLOOD_YAML)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(config.parent), os.environ.get("PYTHONPATH")]))}
    watched: list[Watched] = []

    def start() -> Watched:
        watched.append(Watched(exporter_process(config, "--listen", "127.0.0.1:0", env=env)))
        return watched[-1]

    yield start
    for one in watched:
        one.root.close()


def paced_request(uuid: str, method: str, size: int, wanted: int) -> paced_pb2.PacedRequest:
    call = jumpstarter_pb2.StreamingDriverCallRequest(uuid=uuid, method=method)
    encode_args((size,), call)
    return paced_pb2.PacedRequest(call=call, wanted=wanted)


# Item 1: paced calls ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "size"), [("blobs", KIB), ("ablobs", 64 * KIB)])
def test_a_paced_call_that_asks_for_all_and_reads_nothing_holds_a_bounded_amount(flood, method, size):
    exporter = flood()
    uuid = str(exporter.flood.uuid)
    with grpc.insecure_channel(exporter.exporter.address) as channel:
        outbox: queue.SimpleQueue = queue.SimpleQueue()
        outbox.put(paced_request(uuid, method, size, MAX_ASK_AHEAD))
        call = paced_pb2_grpc.PacedCallServiceStub(channel).PacedStreamingDriverCall(iter(outbox.get, None))
        # held by the exporter, plus what gRPC's windows and the client's take before it reads (a few MiB)
        most = min(BUFFER_ITEMS, BUFFER_BYTES // size + 1) + 16 * MIB // size
        produced = exporter.settled("produced", most)
        assert produced > 1
        call.cancel()
        outbox.put(None)
        exporter.wait_for("closed", 1)  # the generator was stopped when the call ended
        assert exporter.settled("produced", produced) == produced
    assert exporter.peak < 100 * MIB, f"the exporter grew by {exporter.peak / MIB:.0f} MiB"


CLIENT = """
import queue, sys, grpc
from jumpstarter.v1 import jumpstarter_pb2, paced_pb2, paced_pb2_grpc
from jumpstarter.values import encode_args
call = jumpstarter_pb2.StreamingDriverCallRequest(uuid=sys.argv[2], method="blobs")
encode_args((1024,), call)
outbox = queue.SimpleQueue()
outbox.put(paced_pb2.PacedRequest(call=call, wanted=int(sys.argv[3])))
channel = grpc.insecure_channel(sys.argv[1])
responses = paced_pb2_grpc.PacedCallServiceStub(channel).PacedStreamingDriverCall(iter(outbox.get, None))
next(responses)
print("reading", flush=True)
sys.stdin.read()
"""


def test_a_paced_call_whose_client_is_killed_stops_its_generator(flood):
    exporter = flood()
    args = [sys.executable, "-c", CLIENT, exporter.exporter.address, str(exporter.flood.uuid), str(MAX_ASK_AHEAD)]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as client:
        try:
            assert client.stdout is not None and client.stdout.readline() == "reading\n"
            exporter.wait_for("produced", 2)
        finally:
            client.kill()
    exporter.wait_for("closed", 1)
    produced = exporter.settled("produced", BUFFER_ITEMS + 16 * MIB // KIB)
    assert exporter.settled("produced", produced) == produced


def test_a_paced_call_asking_for_absurdly_many_is_refused_naming_the_limit(flood):
    exporter = flood()
    uuid = str(exporter.flood.uuid)
    channel = grpc.insecure_channel(exporter.exporter.address)
    stub = paced_pb2_grpc.PacedCallServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        next(stub.PacedStreamingDriverCall(iter([paced_request(uuid, "blobs", 8, 2**64 - 1)]), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_ASK_AHEAD}" in info.value.details() and "MAX_ASK_AHEAD" in info.value.details()
    assert "flood.blobs" in info.value.details()
    # the same later in the call, beyond the items sent
    outbox: queue.SimpleQueue = queue.SimpleQueue()
    outbox.put(paced_request(uuid, "blobs", 8, 3))
    responses = stub.PacedStreamingDriverCall(iter(outbox.get, None), timeout=30)
    next(responses)
    outbox.put(paced_pb2.PacedRequest(wanted=2**63))
    with pytest.raises(grpc.RpcError) as info:
        for _ in responses:
            pass
    outbox.put(None)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"asked for {2**63} items" in info.value.details()
    exporter.wait_for("closed", 1)  # the second call's generator (the first was refused before it started)
    channel.close()


# Item 14: cancelled uploads --------------------------------------------------------------------------------------


class Endless:
    """An upload source that never ends."""

    def __init__(self, chunk: int) -> None:
        self.chunk = b"u" * chunk

    def __aiter__(self) -> Endless:
        return self

    async def __anext__(self) -> bytes:
        await anyio.sleep(0)
        return self.chunk


def test_a_cancelled_upload_is_freed_without_the_cyclic_collector(board):
    """Its chunks go as soon as it ends: nothing of it is left in a reference cycle (it held 1 MiB chunks of three
    cancelled uploads in a row until a gc.collect(); the exporter's RSS went 104 -> 149 -> 179 MB)."""
    uploads: list[weakref.ref] = []

    async def cancelled_uploads(client) -> None:
        for _ in range(3):
            with anyio.move_on_after(0.5):
                async with client.resource_async(Endless(MIB)):
                    while not board.resources:
                        await anyio.sleep(0.01)
                    uploads.extend(weakref.ref(upload) for upload in board.resources.values())
                    await anyio.sleep(10)  # cancelled here, sending

    gc.disable()
    try:
        with serve(board) as client:
            anyio.run(cancelled_uploads, client)
            assert len(uploads) == 3
            deadline = time.monotonic() + 10
            while any(ref() is not None for ref in uploads) and time.monotonic() < deadline:
                time.sleep(0.05)
            alive = sum(ref() is not None for ref in uploads)
            assert alive == 0, f"{alive} of 3 cancelled uploads are still held (in reference cycles)"
            assert client.checksum(b"after")["size"] == 5
    finally:
        gc.enable()


# Item 4: what idle uploads make the exporter hold ------------------------------------------------------------------


def test_idle_uploads_of_big_chunks_hold_about_the_upload_memory_and_grpcs_windows(exporter_process):
    """16 uploads nobody reads, with --upload-memory 4: their big chunks (15 MiB) once took the exporter +936 MB
    (each held one chunk waiting for room, twice over, and gRPC more). Our client now sends at most
    UPLOAD_CHUNK_MAX a message; each upload holds one chunk in hand and gRPC's flow-control window, 1 MiB."""
    exporter = exporter_process(BOARD_YAML, "--listen", "127.0.0.1:0", "--upload-memory", "4", "--max-uploads", "16")
    pid = exporter.process.pid
    limit = 400 * MIB

    async def idle_uploads(board) -> int:
        base, peak = rss(pid), 0
        async with AsyncExitStack() as stack:
            for _ in range(16):
                await stack.enter_async_context(board.resource_async(Endless(15 * MIB)))
            last, since, deadline = -1, time.monotonic(), time.monotonic() + 20
            while time.monotonic() < deadline and time.monotonic() - since < 2.0:  # until it stops growing
                grown = rss(pid) - base
                if grown > limit:
                    exporter.kill()
                    pytest.fail(f"16 idle uploads grew the exporter by {grown / MIB:.0f} MiB (killed past 400 MiB)")
                peak = max(peak, grown)
                if peak > last + MIB:
                    last, since = peak, time.monotonic()
                await anyio.sleep(0.02)
        return peak

    with connect(exporter.address) as root:
        board = root.children["board"]
        peak = anyio.run(idle_uploads, board)
        # 4 MiB admitted, and each upload's chunk in hand and gRPC's window (1 MiB each): it took 68 MiB here (with
        # gRPC's own windows, which grow with the link, 107 to 307 MiB)
        assert peak < 100 * MIB, f"16 idle uploads grew the exporter by {peak / MIB:.0f} MiB"
        data = os.urandom(3 * MIB)
        got = anyio.run(checksum_of, board, [data])  # a 3 MiB chunk goes as three messages
        assert got == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def checksum_of(board, chunks: list[bytes]) -> dict:
    async def source():
        for chunk in chunks:
            yield chunk

    async with board.resource_async(source()) as handle:
        return await board.call_async("checksum", handle)


def test_an_upload_message_bigger_than_the_limit_is_refused_naming_it(board_client):
    import json

    from jumpstarter.common.frames import encode, raw_stream_method
    from jumpstarter.common.wire import UPLOAD_CHUNK_MAX

    async def send_big(address: str) -> grpc.aio.AioRpcError:
        async with grpc.aio.insecure_channel(address) as channel:
            request = json.dumps({"kind": "resource", "uuid": str(board_client.uuid), "method": ""})
            call = raw_stream_method(channel)(metadata=(("request", request),), timeout=15)
            await call.write(encode(b"x" * (UPLOAD_CHUNK_MAX + 1)))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:
                    await call.read()
            return info.value

    error = anyio.run(send_big, board_client.connection.address)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"({UPLOAD_CHUNK_MAX} bytes, jumpstarter.common.wire.UPLOAD_CHUNK_MAX)" in error.details()
    assert board_client.checksum(b"after")["size"] == 5
