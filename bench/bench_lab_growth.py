"""The growth row of a labgrid lab: 100 places, 8 xdist workers, many short tests; tests/s through the lab beside
the same run with today's ``--exporter`` leases on the same boards.

    .venv/bin/python bench/bench_lab_growth.py [--places 100] [--hosts 4] [--workers 8] [--tests 800]

A real labgrid-coordinator on loopback. The places' exporters are real exporters of ours (gRPC on loopback, the
demo board of examples/jumpstarter-driver-demo, each publishing itself as ``jumpstarter run --labgrid`` does), but
many to a process: ``--hosts`` processes ("lab hosts") serve ``--places`` exporters between them, each exporter on
its own port with its own publisher stream to the coordinator. A hundred ``jumpstarter run`` processes would cost
a hundred interpreters on a 2-core machine and measure their start-up, not the lab.

The same test file runs twice, alternately, ``--rounds`` times each: ``--lab labgrid://...`` (every test
reserves, waits for its allocation, acquires a place, leases its exporter, gives both back) and ``--exporter``
with the hundred addresses (a worker keeps its exporter's lease between its tests). Each test calls the board
once (``echo``). tests/s = tests / the run's test phase (the end-of-run table's, first test start to last test
end: worker start-up left out); the wall time of the whole pytest run beside it. Reported: the median of each
and the ratio lab / ``--exporter``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOARD_YAML = ROOT / "examples" / "jumpstarter-driver-demo" / "board.yaml"
READY = "lab host serving:"
TESTS = """
import pytest

@pytest.mark.parametrize("i", range({count}))
def test_echo(board, i):
    assert board.echo(i) == i
"""


def host(coordinator: str, first: int, count: int) -> None:
    """A lab host: ``count`` exporters of the demo board in this process, each published as place ``p<N>``;
    serves until its stdin closes."""
    from jumpstarter.config import ExporterConfig
    from jumpstarter.exporter.server import serving
    from jumpstarter.labgrid.publish import Publisher

    async def serve_all() -> None:
        config = ExporterConfig.load(BOARD_YAML)
        async with AsyncExitStack() as stack:
            addresses, publishers = [], []
            for n in range(first, first + count):
                name = f"p{n:03d}"
                labels = {"jumpstarter.dev/name": name, "kind": "demo"}
                where = await stack.enter_async_context(serving(config.instantiate(), "127.0.0.1:0", labels=labels))
                publishers.append(Publisher(coordinator, name, where, False, list(config.export), labels).start())
                addresses.append(where)
            print(READY, " ".join(addresses), flush=True)
            try:
                await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
            finally:
                for publisher in publishers:
                    await asyncio.to_thread(publisher.stop)

    asyncio.run(serve_all())


def start_coordinator(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = folder / "coordinator.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("labgrid-coordinator")), "-l", "127.0.0.1:0"],
            cwd=folder,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "listening on" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"labgrid-coordinator did not start: {log.read_text()}")
        time.sleep(0.05)
    return process, log.read_text().split("listening on ")[1].split()[0]


def start_hosts(coordinator: str, places: int, hosts: int) -> tuple[list[subprocess.Popen[str]], list[str]]:
    per = -(-places // hosts)
    started, addresses = [], []
    for first in range(0, places, per):
        started.append(
            subprocess.Popen(
                [sys.executable, __file__, "--host", coordinator, str(first), str(min(per, places - first))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for process in started:  # each prints its line once all its exporters serve (a bench: no timeout needed)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(READY):
            raise SystemExit(f"a lab host did not start: {line!r}")
        addresses += line.removeprefix(READY).split()
    return started, addresses


def wait_published(coordinator: str, places: int) -> float:
    """Seconds until the coordinator has every place's resource."""
    from jumpstarter.labgrid.coordinator import Session

    started = time.monotonic()
    with Session(coordinator) as session:
        while len(session.resources) < places:
            if time.monotonic() - started > 120:
                raise SystemExit(f"only {len(session.resources)} of {places} places published after 120 s")
            session.wait_change(session.version, 1)
    return time.monotonic() - started


def cpu(pid: int) -> float:
    """CPU seconds a process has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(folder: Path, workers: int, source: list[str], tests: int) -> tuple[float, float]:
    """(tests/s over the test phase, wall seconds) of one pytest run."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    command += ["-n", str(workers), *source, "test_many.py"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    wall = time.monotonic() - started
    phase = re.search(r"^test phase ([0-9.]+) s", done.stdout, re.MULTILINE)
    if done.returncode != 0 or phase is None or f"{tests} passed" not in done.stdout:
        raise SystemExit(f"the run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    seconds = float(phase.group(1))  # printed to 0.1 s
    if seconds < 0.1:
        raise SystemExit(f"the test phase of {tests} tests took under 0.1 s: too short to measure; give more --tests")
    return tests / seconds, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, default=100)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--tests", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--host", nargs=3, metavar=("COORDINATOR", "FIRST", "COUNT"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.host:
        coordinator, first, count = options.host
        host(coordinator, int(first), int(count))
        return
    with tempfile.TemporaryDirectory(prefix="bench-lab-growth-") as tmp:
        folder = Path(tmp)
        (folder / "test_many.py").write_text(TESTS.format(count=options.tests))
        coordinator, address = start_coordinator(folder)
        hosts: list[subprocess.Popen[str]] = []
        try:
            started = time.monotonic()
            hosts, addresses = start_hosts(address, options.places, options.hosts)
            published = wait_published(address, options.places)
            print(
                f"{options.places} places from {len(hosts)} lab hosts serving in {time.monotonic() - started:.1f} s "
                f"(published {published:.1f} s after the last served)"
            )
            lab = ["--lab", f"labgrid://{address}"]
            plain = [arg for a in addresses for arg in ("--exporter", a)]
            results: dict[str, list[tuple[float, float]]] = {"lab": [], "exporter": []}
            used = {"lab": 0.0, "exporter": 0.0}  # the coordinator's CPU seconds during each kind of run
            for _ in range(options.rounds):
                for key, source in (("lab", lab), ("exporter", plain)):
                    before = cpu(coordinator.pid)
                    results[key].append(run(folder, options.workers, source, options.tests))
                    used[key] += cpu(coordinator.pid) - before
        finally:
            for process in hosts:
                if process.stdin is not None:
                    process.stdin.close()
            for process in hosts:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            coordinator.kill()
            coordinator.wait()
    rate = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
    wall = {k: statistics.median(w for _, w in v) for k, v in results.items()}
    print(
        f"{options.tests} short tests, {options.workers} xdist workers, {options.places} places, "
        f"median of {options.rounds} runs each:"
    )
    for key, what in (("exporter", "--exporter, a kept lease per worker"), ("lab", "--lab, a place per test")):
        print(f"  {what:38s} {rate[key]:7.1f} tests/s  (pytest wall {wall[key]:.1f} s)")
    print(f"  ratio lab / --exporter: {rate['lab'] / rate['exporter']:.2f}")
    print(
        f"  the coordinator's CPU per --lab test: {used['lab'] * 1000 / (options.rounds * options.tests):.1f} ms "
        f"({used['lab'] / options.rounds:.1f} s a run; {used['exporter'] / options.rounds:.1f} s a --exporter run)"
    )


if __name__ == "__main__":
    main()
