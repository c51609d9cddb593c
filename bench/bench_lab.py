"""A per-test claim through a labgrid lab against today's per-test claim of an exporter given by address.

    .venv/bin/python bench/bench_lab.py [--claims 50]

One demo exporter (``jumpstarter run --labgrid``) published to a real labgrid-coordinator on loopback. Today's
claim is the plugin's Pool leasing the exporter by address (a kept lease, as a worker's tests take it, and a plain
one); the lab's is LabgridPool: reserve, wait for the allocation, acquire the place, lease the exporter, then give
both back. Reported: the median of each in ms, and the lab's as a ratio to each of today's.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jumpstarter.exporter.process import ExporterProcess
from jumpstarter.labgrid.coordinator import Session
from pytest_jumpstarter.exporters import AddressExporter
from pytest_jumpstarter.labgrid import LabgridPool
from pytest_jumpstarter.pool import Needs, Pool

ROOT = Path(__file__).resolve().parent.parent
BOARD_YAML = ROOT / "examples" / "jumpstarter-driver-demo" / "board.yaml"


def timed(claim, count: int) -> float:
    """Median ms of a claim and its release."""
    spans = []
    for _ in range(count):
        started = time.perf_counter()
        claim().release()
        spans.append(time.perf_counter() - started)
    return statistics.median(spans) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=50)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        log = Path(tmp) / "coordinator.log"
        coordinator = subprocess.Popen(
            [str(Path(sys.executable).with_name("labgrid-coordinator")), "-l", "127.0.0.1:0"],
            cwd=tmp,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            while "listening on" not in log.read_text():
                time.sleep(0.05)
            address = log.read_text().split("listening on ")[1].split()[0]
            exporter = ExporterProcess.start(BOARD_YAML, "--listen", "127.0.0.1:0", "--labgrid", address)
            try:
                with Session(address) as session:
                    while not session.resources:
                        session.wait_change(session.version, 1)
                kept = Pool([AddressExporter(exporter.address, None)])
                plain_exporter = AddressExporter(exporter.address, None)
                plain_exporter.keep = False
                plain = Pool([plain_exporter])
                lab = LabgridPool(address, None, False, {}, 0)
                needs: Needs = {"board": {}}
                today_kept = timed(lambda: kept.claim(needs, "bench", 30), options.claims)
                kept.exporters[0].close()
                today_plain = timed(lambda: plain.claim(needs, "bench", 30), options.claims)
                plain_exporter.close()
                through_lab = timed(lambda: lab.claim(needs, "bench", 30), options.claims)
                lab.close()
            finally:
                exporter.stop()
        finally:
            coordinator.kill()
            coordinator.wait()
    print(f"per-test claim + release, median of {options.claims}:")
    print(f"  today, a kept lease (a worker's run of tests):  {today_kept:8.2f} ms")
    print(f"  today, a plain lease:                           {today_plain:8.2f} ms")
    print(f"  through the labgrid lab (reserve, acquire, lease, release): {through_lab:8.2f} ms")
    print(f"  ratio lab / kept: {through_lab / today_kept:.0f}x; lab / plain: {through_lab / today_plain:.1f}x")


if __name__ == "__main__":
    main()
