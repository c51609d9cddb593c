"""Soak: one exporter under hours of mixed, churning and hostile clients; does it hold its resources?

    .venv/bin/python bench/bench_soak.py [--minutes 30] [--clients 6] [--hostile 2]

One `jumpstarter run` exporter (the demo board, plus a paced generator) serves, for the given time:

- ``--clients`` client processes, each in a loop: take the exporter's lease (waiting its turn), do one thing
  (calls, a byte stream, a generator, a paced generator, an upload), give the lease back; now and then they
  drop their connection and connect again (lease and connection churn);
- ``--hostile`` client processes that, under a lease, ask a paced generator for far more than it may run ahead
  (an oversized ``wanted``) and stop reading, leave byte streams and generators open and go away without
  closing them, or are killed (SIGKILL) in the middle of whatever they do; each is replaced when it ends.

It prints the exporter's resident memory (VmRSS), threads and open fds after a warm-up, every minute, and at the
end, with the end's ratio to the warm-up's; then what the clients did. Not a test: read the ratios (a leak grows
with the run's length; a bounded exporter's end is within some per cent of its warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from jumpstarter_driver_demo import Board

from jumpstarter.driver import export

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
CONFIG = """\
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata:
  name: soak
export:
  board:
    type: bench_soak.SoakBoard
    children:
      power:
        type: jumpstarter_driver_demo.Power
"""
LEASE_WAIT = 60.0  # seconds a client waits its turn for the lease before it counts a timeout and tries again
LINE = "x" * 200  # a paced generator's item


class SoakBoard(Board):
    """The demo board, with paced generators (``@export(lookahead=N)``), which the demo has none of."""

    @export(lookahead=4)
    def lines(self, n: int) -> Iterator[str]:
        for i in range(n):
            yield f"{i} {LINE}"

    @export(lookahead=4)
    def lines_forever(self) -> Iterator[str]:
        i = 0
        while True:
            yield f"{i} {LINE}"
            i += 1


# Clients (each a process of its own: ``bench_soak.py --client KIND ADDRESS UNTIL SEED``) ---------------------------


def lease(root, holder: str, until: float):
    """The exporter's lease, waiting up to LEASE_WAIT for it, and not past ``until`` (None: not had in time)."""
    from jumpstarter.client.lease import Busy, handovers, stop_waiting, try_lease, wait_for_handover

    give_up = min(time.time() + LEASE_WAIT, until)
    while time.time() < give_up:
        seen = handovers()
        got = try_lease(root.connection, holder)
        if not isinstance(got, Busy):
            return got
        wait_for_handover(seen, 0.2)
    stop_waiting(root.connection)
    return None


ACTIVITIES = ["calls", "stream", "generator", "paced", "upload"]
MIXES = {"all": ACTIVITIES, **{kind: [kind] for kind in ACTIVITIES}, "leases": [], "hostile": []}


def ordinary(board, rng: random.Random, kinds: list[str]) -> str:
    """One ordinary thing a test does, of ``kinds`` (none: the lease alone); returns its name."""
    if not kinds:
        return "lease only"
    kind = rng.choice(kinds)
    if kind == "calls":
        for i in range(20):
            assert board.add(i, 1) == i + 1
        assert board.echo("y" * rng.choice([10, 1000, 100_000])) is not None
    elif kind == "stream":
        with board.stream("console") as console:
            for _ in range(10):
                data = os.urandom(rng.choice([16, 4096, 16384]))
                console.send(data)
                assert console.receive() == data
    elif kind == "generator":
        assert list(board.count(500)) == list(range(500))
    elif kind == "paced":
        n = rng.choice([10, 200])
        assert sum(1 for _ in board.streamingcall("lines", n)) == n
    else:
        data = os.urandom(rng.choice([1024, 256 * 1024, 2 * MIB]))
        assert board.checksum(data)["size"] == len(data)
    return kind


def hostile(board, rng: random.Random, until: float) -> None:
    """One hostile thing; the process ends with it (leaving open whatever it left open)."""
    import grpc

    from jumpstarter.v1 import jumpstarter_pb2, paced_pb2, paced_pb2_grpc

    kind = rng.choice(["wanted", "abandoned stream", "abandoned generator", "killed"])
    connection = board.connection
    if kind == "wanted":  # a paced generator (lookahead 4) asked for far more items, and not read
        stub = paced_pb2_grpc.PacedCallServiceStub(connection.channel)
        request = jumpstarter_pb2.StreamingDriverCallRequest(uuid=board.uuid, method="lines_forever")
        call = paced_pb2.PacedRequest(call=request, wanted=rng.choice([10**6, 2**62]))
        replies = stub.PacedStreamingDriverCall(iter([call]), metadata=connection.metadata)
        try:
            next(replies)
        except grpc.RpcError as err:  # an exporter may refuse the ask outright
            kind = f"wanted, refused ({err.code().name})"
        time.sleep(rng.uniform(0.5, 3))  # not reading meanwhile
    elif kind == "abandoned stream":  # bytes sent and never read back, the stream never closed
        opened = board.stream("console")  # entered and never exited
        stream = opened.__enter__()
        for _ in range(rng.randint(1, 40)):
            stream.send(os.urandom(16384))
        time.sleep(rng.uniform(0, 2))
    elif kind == "abandoned generator":
        items = board.streamingcall("lines_forever")
        next(items)
        time.sleep(rng.uniform(0, 2))
    else:  # killed by the soak's driver mid-action: it sits in a call until then
        while time.time() < until:
            ordinary(board, rng, ACTIVITIES)
    print(json.dumps({f"hostile: {kind}": 1}), flush=True)
    os._exit(0)  # no cleanup: the exporter must notice by itself


def client(kind: str, mix: str, address: str, until: float, seed: int) -> None:
    from jumpstarter.client import connect

    rng = random.Random(seed)
    done: Counter[str] = Counter()
    holder = f"soak {kind} {os.getpid()}"
    while time.time() < until:
        with connect(address) as root:
            board = root.children["board"]
            for _ in range(rng.randint(1, 50)):  # then a new connection
                if time.time() >= until:
                    break
                held = lease(root, holder, until)
                if held is None:
                    done["lease timeouts"] += time.time() < until  # not the run's end
                    continue
                try:
                    if kind == "hostile":
                        hostile(board, rng, until)
                    done[ordinary(board, rng, MIXES[mix])] += 1
                except Exception as exc:  # counted by kind and message: what the soak found
                    done[f"error {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"] += 1
                finally:
                    held.release()
                done["leases"] += 1
                time.sleep(rng.uniform(0, 0.02))
            done["connections"] += 1
    print(json.dumps(done), flush=True)


# The soak's driver ------------------------------------------------------------------------------------------------


def usage(pid: int) -> tuple[float, int, int]:
    """(VmRSS MiB, threads, open fds) of process ``pid``."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    rss = int(status["VmRSS"].split()[0]) / 1024
    return rss, int(status["Threads"]), len(os.listdir(f"/proc/{pid}/fd"))


def spawn(kind: str, mix: str, address: str, until: float, seed: int) -> subprocess.Popen:
    command = [sys.executable, __file__, "--client", kind, mix, address, str(until), str(seed)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def soak(options: argparse.Namespace) -> None:
    from jumpstarter.exporter.process import ExporterProcess

    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")]))}
    if options.default_malloc:  # no freed heap kept for the next large buffer (jumpstarter.common.memory)
        env["JUMPSTARTER_MALLOC"] = "default"
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        config = Path(folder) / "soak.yaml"
        config.write_text(CONFIG)
        exporter = ExporterProcess.start(config, "--listen", "127.0.0.1:0", env=env)
        try:
            run(exporter, options)
        finally:
            exporter.stop()


class Watch:
    """The exporter's usage, sampled as the soak goes: its peak, and a stop (exit) if it dies or its RSS passes
    ``max_rss`` (a shared machine: a runaway exporter must not take everyone's memory)."""

    def __init__(self, exporter, max_rss: float, clients: list[subprocess.Popen]) -> None:
        self.exporter, self.max_rss, self.clients = exporter, max_rss, clients
        self.started = time.time()
        self.peak = 0.0

    def sample(self) -> tuple[float, int, int]:
        exporter = self.exporter
        if not exporter.alive:
            self._stop(f"the exporter died:\n{''.join(exporter.lines[-40:])}")
        now = usage(exporter.process.pid)
        self.peak = max(self.peak, now[0])
        if now[0] > self.max_rss:
            self._stop(
                f"the exporter's RSS {now[0]:.0f} MiB passed --max-rss {self.max_rss:g} (threads {now[1]}, "
                f"fds {now[2]})"
            )
        return now

    def show(self, now: tuple[float, int, int], note: str = "") -> None:
        print(f"{time.time() - self.started:>7.0f}s {now[0]:>8.1f} {now[1]:>8} {now[2]:>5}{note}", flush=True)

    def _stop(self, why: str) -> None:
        for process in self.clients:
            process.kill()
        sys.exit(f"soak: stopped at {time.time() - self.started:.0f} s: {why}")


def slope(samples: list[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, MiB) samples, in MiB a minute (0 for fewer than two)."""
    if len(samples) < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_m = sum(m for _, m in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    return 60 * sum((t - mean_t) * (m - mean_m) for t, m in samples) / spread if spread else 0.0


def run(exporter, options: argparse.Namespace) -> None:
    address, minutes, mix = exporter.address, options.minutes, options.mix
    clients = 0 if mix == "hostile" else options.clients
    hostiles = options.hostile if mix in ("all", "hostile") else 0
    processes: list[subprocess.Popen] = []
    watch = Watch(exporter, options.max_rss, processes)
    until = watch.started + minutes * 60
    print(
        f"soak: exporter pid {exporter.process.pid} at {address}; {clients} clients ({mix}), {hostiles} hostile; "
        f"{minutes:g} min"
    )
    print(f"{'elapsed':>8} {'RSS MiB':>8} {'threads':>8} {'fds':>5}")
    watch.show(watch.sample(), "  (idle)")
    rng = random.Random(1)
    workers = [spawn("ordinary", mix, address, until, seed) for seed in range(clients)]
    enemies = [spawn("hostile", mix, address, until, 1000 + seed) for seed in range(hostiles)]
    processes += workers + enemies
    spawned, killed = hostiles, 0
    reports: list[str] = []
    first: tuple[float, int, int] | None = None
    warm: list[tuple[float, float]] = []  # (seconds, RSS MiB) after the warm-up: the slope's samples
    next_show = watch.started + min(60.0, minutes * 60 / 6)  # the first after a warm-up
    while time.time() < until:
        time.sleep(rng.uniform(1, 4))
        if enemies and rng.random() < 0.5:  # killed clients: in the middle of whatever they do
            rng.choice(enemies).send_signal(signal.SIGKILL)
            killed += 1
        for i, enemy in enumerate(enemies):
            if enemy.poll() is not None:
                reports.append(enemy.communicate()[0])
                spawned += 1
                enemies[i] = spawn("hostile", mix, address, until, 1000 + spawned)
                processes.append(enemies[i])
        now = watch.sample()
        if first:
            warm.append((time.time(), now[0]))
        if time.time() >= next_show:
            first = first or now
            watch.show(now, "" if first is not now else "  (warmed up)")
            next_show += 60
    while any(process.poll() is None for process in workers + enemies):  # they end at ``until``, or a lease wait
        time.sleep(1)
        watch.sample()
    reports += [process.communicate()[0] for process in workers + enemies]
    time.sleep(5)  # the exporter notices the last clients' ends
    end = watch.sample()
    first = first or end
    watch.show(end, "  (end, clients gone)")
    print(
        f"end / warm-up: RSS {end[0] / first[0]:.2f}, threads {end[1] / first[1]:.2f}, fds {end[2] / first[2]:.2f}; "
        f"peak RSS {watch.peak:.1f} MiB; slope after warm-up {slope(warm):+.2f} MiB/min ({mix})"
    )
    totals: Counter[str] = Counter()
    for report in reports:
        for line in report.splitlines():
            if line.startswith("{"):
                totals.update(json.loads(line))
    print(f"hostile clients started {spawned}, killed {killed}")
    print("clients did: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    lines = exporter.lines
    errors = [i for i, line in enumerate(lines) if "Traceback" in line or "ERROR" in line]
    print(f"exporter log: {len(lines)} lines, {len(errors)} with a traceback or ERROR")
    for i in errors[:5]:  # read, not only counted: each with what follows it (a traceback's frames)
        print("".join("    " + line for line in lines[i : i + 12]), end="")
    if options.log:
        Path(options.log).write_text("".join(lines))


def main() -> None:
    if sys.argv[1:2] == ["--client"]:
        kind, mix, address, until, seed = sys.argv[2:7]
        client(kind, mix, address, float(until), int(seed))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument("--clients", type=int, default=6, help="ordinary client processes (default 6)")
    parser.add_argument("--hostile", type=int, default=2, help="hostile client processes (default 2)")
    parser.add_argument("--max-rss", type=float, default=2048, help="stop if the exporter's RSS passes this (MiB)")
    parser.add_argument(
        "--default-malloc", action="store_true", help="the exporter keeps no freed heap for reuse: RSS growth is leaks"
    )
    parser.add_argument(
        "--mix",
        choices=list(MIXES),
        default="all",
        help="what the clients do: all (default), one activity, leases (take and give back only), or hostile "
        "(hostile clients only); hostile clients run with all and hostile",
    )
    parser.add_argument("--log", help="write the exporter's log to this file at the end")
    options = parser.parse_args()
    soak(options)


if __name__ == "__main__":
    main()
