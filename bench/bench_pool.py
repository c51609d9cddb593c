"""Parallel hardware-in-the-loop: 4 exporters, 32 tests of one 0.5 s call each, pytest -n 4.

    .venv/bin/python bench/bench_pool.py [--exporters 4] [--workers N] [--tests 32] [--seconds 0.5]

The exporters are ``jumpstarter run`` processes serving the demo Board, whose
``wait`` sleeps without blocking. The ideal is tests * seconds / exporters.
Reported: the test phase (first lease taken to last released, from the
exporters' own lease records) against that ideal (target <= 1.25x), the whole
run including pytest and xdist start-up against the same tests sleeping
locally with no exporter at all, the number of overlapping leases on any
one exporter (must be 0), and how long a board sat idle between two leases
while a test waited for it (``--workers`` above ``--exporters``: every board
is contended, and each release hands it to a waiter).
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jumpstarter.client import connect
from jumpstarter.client.lease import lease_records
from jumpstarter.exporter.process import ExporterProcess

ROOT = Path(__file__).resolve().parent.parent
BOARD_YAML = ROOT / "examples" / "jumpstarter-driver-demo" / "board.yaml"
TRUSTED = frozenset({"jumpstarter_driver_demo.client.BoardClient", "jumpstarter_driver_demo.client.PowerClient"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporters", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0, help="pytest-xdist workers (default: one per exporter)")
    parser.add_argument("--tests", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=0.5)
    options = parser.parse_args()
    workers = options.workers or options.exporters
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
        folder = Path(tmp)
        exporters = [
            ExporterProcess.start(BOARD_YAML, "--listen", f"unix://{folder / f'e{i}.sock'}")
            for i in range(options.exporters)
        ]
        try:
            (folder / "test_slow.py").write_text(
                "".join(f"def test_{i}(board):\n    board.wait({options.seconds})\n\n" for i in range(options.tests))
            )
            (folder / "test_bare.py").write_text(
                "import time\n\n"
                + "".join(f"def test_{i}():\n    time.sleep({options.seconds})\n\n" for i in range(options.tests))
            )
            args = [a for e in exporters for a in ("--exporter", e.address)]
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers)]
            started = time.monotonic()
            done = subprocess.run([*command, "test_slow.py", *args], cwd=folder, capture_output=True, text=True)
            whole = time.monotonic() - started
            started = time.monotonic()
            subprocess.run([*command, "test_bare.py"], cwd=folder, capture_output=True, text=True, check=True)
            bare = time.monotonic() - started
            if done.returncode != 0:
                sys.exit(f"pytest failed:\n{done.stdout}\n{done.stderr}")
            per_exporter = []
            for e in exporters:
                with connect(e.address, trusted=TRUSTED) as client:
                    per_exporter.append(lease_records(client.connection))
        finally:
            for e in exporters:
                e.stop()
    leases = [r for records in per_exporter for r in records]
    phase = max(r.released for r in leases) - min(r.granted for r in leases)
    ideal = options.tests * options.seconds / min(options.exporters, workers)
    overlaps, gaps = 0, []
    for records in per_exporter:
        spans = sorted((r.granted, r.released or math.inf) for r in records)
        overlaps += sum(1 for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1])
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False)]
    print(f"{options.tests} tests x {options.seconds} s on {options.exporters} exporters, -n {workers}")
    print(f"  leases: {len(leases)}, per exporter {[len(r) for r in per_exporter]}, overlapping: {overlaps}")
    print(
        f"  test phase (exporters' records): {phase:.2f} s = {phase / ideal:.3f}x the ideal {ideal:g} s"
        " (target <= 1.25x)"
    )
    print(f"  whole run with pytest and xdist start-up: {whole:.2f} s = {whole / ideal:.3f}x the ideal")
    print(f"  the same run of time.sleep() tests, no exporters: {bare:.2f} s; ours / that = {whole / bare:.3f}x")
    if gaps:
        gaps.sort()
        print(
            f"  a board idle between two leases: median {statistics.median(gaps) * 1000:.1f} ms, "
            f"90th percentile {gaps[int(len(gaps) * 0.9)] * 1000:.1f} ms, in all {sum(gaps):.2f} s"
        )


if __name__ == "__main__":
    main()
