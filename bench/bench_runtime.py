"""Driver runtime against bare gRPC, side by side in one process, on the same kind of socket; generators
against upstream Jumpstarter 0.9.0.

    .venv/bin/python bench/bench_runtime.py [--quick]

Both servers run on background event loops and listen on unix sockets; both
clients are blocking grpc stubs in the main thread. Each measure alternates
between ours and its baseline for several rounds, so that the machine's drifting
load falls on both alike; medians over rounds and their ratios are reported,
with the targets (unary median <= 1.2x bare sync, <= 1.1x async; byte-stream
echo >= 0.9x bare bidi; 1 MiB string echo >= 0.5x bare; generator items/s
>= 5x upstream's client with upstream's exporter).

"bare with our messages": a bare handler that echoes in DriverCallRequest/DriverCallResponse, as our client and
exporter exchange them, with nothing else of the runtime: the part of a unary call's cost that is the messages'.

Byte streams: the demo board's console (an anyio memory object stream, as drivers commonly write one), and the
same echo through an asyncio.Queue ("queue driver"), which shows what the runtime itself costs a stream.

Generators against upstream: the demo board's count() and ticks() under in-process serve(), our runtime in
this checkout's .venv and upstream's in .venv-upstream (scripts/setup-upstream.sh), a process each per
round (as bench/bench_serve.py does).
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import grpc
from jumpstarter_driver_demo import Board

from jumpstarter.client import DriverClient
from jumpstarter.common.background import background_portal
from jumpstarter.common.wire import GRPC_OPTIONS
from jumpstarter.driver import Driver, export, exportstream
from jumpstarter.inprocess import serve
from jumpstarter.v1 import jumpstarter_pb2
from jumpstarter.values import decode_args, decode_result, encode_args, encode_result

CHUNK = 64 * 1024
MIB = 1024 * 1024
SERVICE = "bench.Bare"
ROOT = Path(__file__).resolve().parents[1]
PYTHONS = {"ours": ROOT / ".venv" / "bin" / "python", "upstream": ROOT / ".venv-upstream" / "bin" / "python"}

# Runs in each venv (-I: each imports its own jumpstarter): items/s of one generator call of argv[2] items.
GENERATOR_PEER = """
import sys, time
from jumpstarter.common.utils import serve  # upstream's path: this runs in both venvs
from jumpstarter_driver_demo import Board

method, n = sys.argv[1], int(sys.argv[2])
args = (n, 0.0) if method == "ticks" else (n,)
with serve(Board()) as board:
    sum(1 for _ in board.streamingcall(method, 100))  # warm up: the channel, the exporter's threads
    started = time.perf_counter()
    got = sum(1 for _ in board.streamingcall(method, *args))
    print(got / (time.perf_counter() - started))
"""


def peer_items_per_second(side: str, method: str, items: int) -> float:
    done = subprocess.run(
        [str(PYTHONS[side]), "-I", "-c", GENERATOR_PEER, method, str(items)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"{side} generator peer failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.split()[-1])


def _identity(data: bytes) -> bytes:
    return data


async def _echo(request: bytes, context) -> bytes:
    return request


async def _message_echo(request: jumpstarter_pb2.DriverCallRequest, context) -> jumpstarter_pb2.DriverCallResponse:
    """The echo in our call messages, with none of the runtime around it: what the messages alone cost a call."""
    response = jumpstarter_pb2.DriverCallResponse(uuid=request.uuid)
    encode_result(decode_args(request)[0], response)
    return response


async def _count(request: bytes, context):
    for i in range(int(request)):
        yield i.to_bytes(8, "little")


async def _bidi(requests, context):
    async for chunk in requests:
        yield chunk


@contextmanager
def bare_server() -> Iterator[grpc.Channel]:
    """A grpc.aio server with generic unary, server-streaming and bidi handlers; a channel to it.

    It runs on the event loop serve() runs ours on, as an exporter runs all its RPCs on one loop: grpc.aio has one
    completion queue poller per process, and with servers on two loops each of its events wakes both loops (the
    one that takes it hands the other's on with call_soon_threadsafe): both sides were some 50-100 us a call slower
    than either runs in use."""
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo, _identity, _identity),
        "MessageEcho": grpc.unary_unary_rpc_method_handler(
            _message_echo,
            jumpstarter_pb2.DriverCallRequest.FromString,
            jumpstarter_pb2.DriverCallResponse.SerializeToString,
        ),
        "Count": grpc.unary_stream_rpc_method_handler(_count, _identity, _identity),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, _identity, _identity),
    }

    async def start(address: str) -> grpc.aio.Server:
        server = grpc.aio.server(options=GRPC_OPTIONS)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_insecure_port(address)
        await server.start()
        return server

    portal = background_portal()  # serve()'s
    with tempfile.TemporaryDirectory() as tmp:
        address = f"unix://{Path(tmp) / 'bare.sock'}"
        server = portal.call(start, address)
        try:
            with grpc.insecure_channel(address, options=GRPC_OPTIONS) as channel:
                grpc.channel_ready_future(channel).result(timeout=5)
                yield channel
        finally:
            portal.call(server.stop, None)


class _QueueEcho:
    """An echo byte stream that hands chunks on through an asyncio.Queue: no anyio checkpoints, so that an echo
    through it measures the runtime's own cost of a byte stream (the demo board's console is an anyio memory
    object stream, which yields to the event loop twice a chunk)."""

    def __init__(self) -> None:
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue(16)

    async def send(self, item: bytes) -> None:
        await self._chunks.put(item)

    async def send_eof(self) -> None:
        await self._chunks.put(None)

    async def receive(self) -> bytes:
        item = await self._chunks.get()
        if item is None:
            raise anyio.EndOfStream
        return item


@dataclass(kw_only=True)
class AsyncEcho(Driver):
    """The same echo and count as the demo board, as async methods; and an echo stream without anyio's checkpoints."""

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    async def echo(self, value):
        return value

    @export
    async def count(self, n: int):
        for i in range(n):
            yield i

    @exportstream
    @asynccontextmanager
    async def console(self) -> AsyncIterator[_QueueEcho]:
        yield _QueueEcho()


def paired_latencies(ours: Callable[[], object], bare: Callable[[], object], n: int) -> tuple[list, list]:
    """Latencies of ``n`` calls each, alternating one call of each side so that load drift touches both alike."""
    for _ in range(min(100, n)):
        ours()
        bare()
    clock = time.perf_counter
    a, b = [], []
    for _ in range(n):
        t0 = clock()
        ours()
        t1 = clock()
        bare()
        t2 = clock()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return a, b


def unary(ours: Callable[[], object], bare: Callable[[], object], n: int, stat: Callable) -> Callable:
    return lambda: tuple(stat(side) * 1e6 for side in paired_latencies(ours, bare, n))


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def per_second(run: Callable[[], int]) -> float:
    """Units per second of one ``run`` (which returns the units it did)."""
    started = time.perf_counter()
    units = run()
    return units / (time.perf_counter() - started)


def pipelined_echo(
    send: Callable[[bytes], None], finish: Callable[[], None], receive: Iterator[bytes], total: int, size: int = CHUNK
):
    """Send ``total`` bytes in chunks of ``size`` from a thread while reading the echo here; return bytes echoed."""
    chunk = b"\xa5" * size

    def writer() -> None:
        for _ in range(total // size):
            send(chunk)
        finish()

    thread = threading.Thread(target=writer)
    thread.start()
    got = 0
    for data in receive:
        got += len(data)
        if got >= total:
            break
    thread.join()
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each measure (default 5)")
    parser.add_argument("--no-upstream", action="store_true", help="skip the generator comparison with upstream")
    args = parser.parse_args()
    calls, items, stream_bytes, big = (300, 3_000, 8 * MIB, 5) if args.quick else (2_000, 20_000, 64 * MIB, 20)
    peer_items = 5_000 if args.quick else 50_000
    short = "hello, board"
    one_mib = "x" * MIB
    for python in PYTHONS.values():
        if not args.no_upstream and not python.exists():
            sys.exit(f"{python} is missing: run scripts/setup-upstream.sh (or pass --no-upstream)")

    started = time.perf_counter()
    with serve(Board()) as board, serve(AsyncEcho()) as async_board, bare_server() as channel:
        board.call("echo", short)
        startup_ms = (time.perf_counter() - started) * 1e3
        echo = channel.unary_unary(f"/{SERVICE}/Echo", _identity, _identity)
        count = channel.unary_stream(f"/{SERVICE}/Count", _identity, _identity)
        bidi = channel.stream_stream(f"/{SERVICE}/Bidi", _identity, _identity)

        def ours_stream(size: int, client: DriverClient = board) -> int:
            with client.stream("console") as s:
                return pipelined_echo(s.send, s.send_eof, iter(s), stream_bytes, size)

        def bare_stream(size: int) -> int:
            outbox: queue.SimpleQueue = queue.SimpleQueue()
            responses = bidi(iter(outbox.get, None))
            try:
                return pipelined_echo(outbox.put, lambda: outbox.put(None), responses, stream_bytes, size)
            finally:
                responses.cancel()

        short_bytes, payload = short.encode(), one_mib.encode()

        def sync_echo() -> object:
            return board.call("echo", short)

        def async_echo() -> object:
            return async_board.call("echo", short)

        def bare_echo() -> object:
            return echo(short_bytes)

        message_echo = channel.unary_unary(
            f"/{SERVICE}/MessageEcho",
            jumpstarter_pb2.DriverCallRequest.SerializeToString,
            jumpstarter_pb2.DriverCallResponse.FromString,
        )

        def bare_message_echo() -> object:
            request = jumpstarter_pb2.DriverCallRequest(uuid=async_board.uuid, method="echo")
            encode_args((short,), request)
            return decode_result(message_echo(request))

        # name -> (unit, baseline, ours, theirs), or (unit, baseline, both) for a reading of the two sides at once
        measures: dict[str, tuple] = {
            "unary median, sync method": ("us", "bare", unary(sync_echo, bare_echo, calls, statistics.median)),
            "unary p99, sync method": ("us", "bare", unary(sync_echo, bare_echo, calls, p99)),
            "unary median, async method": ("us", "bare", unary(async_echo, bare_echo, calls, statistics.median)),
            "unary p99, async method": ("us", "bare", unary(async_echo, bare_echo, calls, p99)),
            "unary median, bare with our messages": (
                "us",
                "bare",
                unary(bare_message_echo, bare_echo, calls, statistics.median),
            ),
            "generator, sync": (
                "items/s",
                "bare",
                lambda: per_second(lambda: sum(1 for _ in board.streamingcall("count", items))),
                lambda: per_second(lambda: sum(1 for _ in count(str(items).encode()))),
            ),
            "generator, async": (
                "items/s",
                "bare",
                lambda: per_second(lambda: sum(1 for _ in async_board.streamingcall("count", items))),
                lambda: per_second(lambda: sum(1 for _ in count(str(items).encode()))),
            ),
            "byte stream echo, 64 KiB": (
                "MB/s",
                "bare",
                lambda: per_second(lambda: ours_stream(CHUNK)) / MIB,
                lambda: per_second(lambda: bare_stream(CHUNK)) / MIB,
            ),
            "byte stream echo, 64 KiB, queue driver": (
                "MB/s",
                "bare",
                lambda: per_second(lambda: ours_stream(CHUNK, async_board)) / MIB,
                lambda: per_second(lambda: bare_stream(CHUNK)) / MIB,
            ),
            "byte stream echo, 1 MiB": (
                "MB/s",
                "bare",
                lambda: per_second(lambda: ours_stream(MIB)) / MIB,
                lambda: per_second(lambda: bare_stream(MIB)) / MIB,
            ),
            "1 MiB string echo": (
                "MB/s",
                "bare",
                lambda: per_second(lambda: sum(len(board.call("echo", one_mib)) for _ in range(big))) / MIB,
                lambda: per_second(lambda: sum(len(echo(payload)) for _ in range(big))) / MIB,
            ),
        }
        if not args.no_upstream:
            for kind, method in (("sync", "count"), ("async", "ticks")):
                measures[f"generator, {kind} (demo {method})"] = (
                    "items/s",
                    "upstream",
                    lambda method=method: peer_items_per_second("ours", method, peer_items),
                    lambda method=method: peer_items_per_second("upstream", method, peer_items),
                )
        readings: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in measures}
        for _ in range(args.rounds):  # alternate, so that drifting machine load touches both sides alike
            for name, (_, _, *sides) in measures.items():
                ours, theirs = sides[0]() if len(sides) == 1 else (sides[0](), sides[1]())
                readings[name][0].append(ours)
                readings[name][1].append(theirs)

    print(f"{args.rounds} alternating rounds; medians over rounds\n")
    ratios = {}
    for baseline, title in (("bare", "bare gRPC"), ("upstream", "upstream")):
        names = [name for name, (_, base, *_) in measures.items() if base == baseline]
        if not names:
            continue
        print(f"{'measure':40} {'unit':>8} {'ours':>10} {title:>10} {'ratio':>7}")
        for name in names:
            unit = measures[name][0]
            ours_value, their_value = (statistics.median(r) for r in readings[name])
            ratios[name] = ours_value / their_value
            print(f"{name:40} {unit:>8} {ours_value:10.1f} {their_value:10.1f} {ratios[name]:7.2f}")
        print()
    print(f"{'serve() to first call':40} {'ms':>8} {startup_ms:10.1f}")
    print()
    targets = [
        ("unary median, sync method", "<=", 1.2),
        ("unary median, async method", "<=", 1.1),
        ("byte stream echo, 64 KiB", ">=", 0.9),
        ("1 MiB string echo", ">=", 0.5),
        ("generator, sync (demo count)", ">=", 5.0),
        ("generator, async (demo ticks)", ">=", 5.0),
    ]
    for name, op, target in targets:
        if name not in ratios:
            continue
        ok = ratios[name] <= target if op == "<=" else ratios[name] >= target
        print(f"target {name:34} {ratios[name]:5.2f} {op} {target}  {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
