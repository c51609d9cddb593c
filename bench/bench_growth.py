"""How cost grows with work: clients on one exporter, value size, exporters started at once.

    .venv/bin/python bench/bench_growth.py [--quick]

- Concurrent clients: one `jumpstarter run` exporter (tests/upstream/custom.yaml), N client processes
  (ours, each its own connection) calling the demo board's add() for a fixed time; calls/s in total and
  per client. Linear would be: total calls/s flat once the exporter's event loop is busy.
- Value size: a string of 1 KiB .. 16 MiB echoed through serve() (the demo board's echo()), and the same
  bytes through a bare gRPC echo in the same process, alternating; MB/s of each and their ratio.
- Exporters started at once: N `jumpstarter run` subprocesses started together; the time until all
  serve, and each one's resident memory (VmRSS) once serving.

"No step grows worse than linearly" reads as: calls/s per client falls no faster than 1/N, MB/s does not
fall as values grow (time per byte flat or better), start-up time grows no faster than N, RSS per
exporter flat. The knee is where a curve bends: printed with each table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_runtime import SERVICE, _identity, bare_server  # noqa: E402
from jumpstarter_driver_demo import Board  # noqa: E402

from jumpstarter.exporter.process import ExporterProcess  # noqa: E402
from jumpstarter.inprocess import serve  # noqa: E402

CONFIG = ROOT / "tests" / "upstream" / "custom.yaml"
# A 16 MiB string is more than the exporter takes by default (16 MiB a message, framing included).
os.environ.setdefault("JUMPSTARTER_MAX_MESSAGE_SIZE", "64")
KIB, MIB = 1024, 1024 * 1024

# The clients: N threads of one process, each with its own connection, calling add() from a common start
# to a common end; prints the calls made. One process: on a 2-core machine, N client processes would take
# the exporter's CPU from it and measure the scheduler instead.
CLIENTS = """
import sys, threading, time
from jumpstarter.client import connect
address, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
exporters = [connect(address) for _ in range(n)]
boards = [e.children["board"] for e in exporters]
for board in boards:
    board.call("add", 1, 2)
counts = [0] * n
start = threading.Barrier(n + 1)
end = 0.0

def run(i):
    board = boards[i]
    start.wait()
    calls = 0
    while time.perf_counter() < end:
        board.call("add", 1, 2)
        calls += 1
    counts[i] = calls

threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
for thread in threads:
    thread.start()
end = time.perf_counter() + seconds
start.wait()
for thread in threads:
    thread.join()
print(sum(counts))
"""


def concurrent_clients(counts: list[int], seconds: float) -> list[tuple[int, float]]:
    """(clients, total calls/s) for each count, against one exporter."""
    exporter = ExporterProcess.start(CONFIG, "--listen", "127.0.0.1:0")
    rows = []
    try:
        for n in counts:
            done = subprocess.run(
                [sys.executable, "-c", CLIENTS, exporter.address, str(n), str(seconds)],
                capture_output=True,
                text=True,
                timeout=seconds + 120,
                check=False,
            )
            if done.returncode != 0:
                sys.exit(f"the clients failed ({done.returncode}):\n{done.stderr[-3000:]}")
            rows.append((n, int(done.stdout.split()[-1]) / seconds))
    finally:
        exporter.stop()
    return rows


def value_sizes(sizes: list[int], rounds: int, budget: int) -> list[tuple[int, float, float]]:
    """(size, ours MB/s, bare MB/s) of echoing a string of each size, alternating ours and bare."""
    rows = []
    with serve(Board()) as board, bare_server() as channel:
        echo = channel.unary_unary(f"/{SERVICE}/Echo", _identity, _identity)
        for size in sizes:
            text = "x" * size
            payload = text.encode()
            calls = max(3, min(2000, budget // size))
            board.call("echo", text)
            echo(payload)
            ours, bare = [], []
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(calls):
                    board.call("echo", text)
                ours.append(calls * size / MIB / (time.perf_counter() - started))
                started = time.perf_counter()
                for _ in range(calls):
                    echo(payload)
                bare.append(calls * size / MIB / (time.perf_counter() - started))
            rows.append((size, statistics.median(ours), statistics.median(bare)))
    return rows


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def exporters_at_once(counts: list[int]) -> list[tuple[int, float, float]]:
    """(exporters, seconds until all serve, mean RSS MiB per exporter) for each count."""
    rows = []
    for n in counts:
        started = time.perf_counter()
        exporters = [ExporterProcess(CONFIG, "--listen", "127.0.0.1:0") for _ in range(n)]
        try:
            for exporter in exporters:
                exporter.wait_ready(120)
            elapsed = time.perf_counter() - started
            rss = statistics.mean(rss_kib(e.process.pid) for e in exporters) / KIB
            rows.append((n, elapsed, rss))
        finally:
            for exporter in exporters:
                exporter.stop()
    return rows


def knee(xs: list[float], per_unit: list[float]) -> str:
    """Where the cost per unit of work first grows by more than half over its previous step (or none)."""
    for i in range(1, len(per_unit)):
        if per_unit[i] > 1.5 * per_unit[i - 1]:
            return f"between {xs[i - 1]:g} and {xs[i]:g}"
    return "none within the range"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: shorter and fewer rounds")
    options = parser.parse_args()
    seconds = 2.0 if options.quick else 5.0
    rounds = 1 if options.quick else 3

    print("Concurrent clients on one exporter (`jumpstarter run`; client threads of one process, add(1, 2))")
    rows = concurrent_clients([1, 8, 32], seconds)
    print(f"{'clients':>8} {'calls/s':>10} {'per client':>11} {'us/call':>8}")
    for n, rate in rows:
        print(f"{n:>8} {rate:>10.0f} {rate / n:>11.1f} {1e6 / rate:>8.1f}")
    print(f"knee (time per call grows by half): {knee([n for n, _ in rows], [1 / rate for _, rate in rows])}\n")

    print("Value size: a string echoed, ours (serve()) beside bare gRPC (the same bytes), MB/s")
    sizes = [KIB, 16 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB]
    rows_v = value_sizes(sizes, rounds, budget=(32 if options.quick else 128) * MIB)
    print(f"{'size':>8} {'ours MB/s':>10} {'bare MB/s':>10} {'ratio':>6} {'ours us/KiB':>12}")
    for size, ours, bare in rows_v:
        label = f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"
        print(f"{label:>8} {ours:>10.1f} {bare:>10.1f} {ours / bare:>6.2f} {1e6 / (ours * KIB):>12.2f}")
    per_byte = [1 / ours for _, ours, _ in rows_v]
    print(f"knee (time per byte grows by half): {knee([s / KIB for s, _, _ in rows_v], per_byte)} (KiB)\n")

    print("Exporters started at once (`jumpstarter run` subprocesses, tests/upstream/custom.yaml)")
    rows_e = exporters_at_once([1, 4, 16])
    print(f"{'exporters':>9} {'all serving s':>14} {'s/exporter':>11} {'RSS MiB each':>13}")
    for n, elapsed, rss in rows_e:
        print(f"{n:>9} {elapsed:>14.2f} {elapsed / n:>11.3f} {rss:>13.1f}")
    per_exporter = [elapsed / n for n, elapsed, _ in rows_e]
    print(f"knee (start-up time per exporter grows by half): {knee([n for n, _, _ in rows_e], per_exporter)}")


if __name__ == "__main__":
    main()
