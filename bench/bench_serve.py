"""In-process ``serve()``: ours beside upstream Jumpstarter 0.9.0's, in one run.

    .venv/bin/python bench/bench_serve.py [--rounds N] [--uses N]

What a mocked test pays: ``with serve(driver) as client: client.call(...)`` (enter, one call, exit). The
same driver code (upstream's names, which are ours) runs under each runtime in a process of its own: ours
from this checkout's .venv, upstream's from .venv-upstream (scripts/setup-upstream.sh). Rounds alternate
between the two so that the machine's drifting load falls on both alike; medians over rounds are
reported, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = {"ours": ROOT / ".venv" / "bin" / "python", "upstream": ROOT / ".venv-upstream" / "bin" / "python"}

# Runs in each venv; prints the milliseconds of each use (enter + one call + exit).
PEER = """
import json, sys, time
from dataclasses import dataclass
from jumpstarter.inprocess import serve
from jumpstarter.driver import Driver, export

@dataclass(kw_only=True)
class Power(Driver):
    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    def on(self) -> str:
        return "ok"

with serve(Power()) as client:  # the first use pays the imports and grpc's start: not measured
    client.call("on")
times = []
for _ in range(int(sys.argv[1])):
    started = time.perf_counter()
    with serve(Power()) as client:
        assert client.call("on") == "ok"
    times.append((time.perf_counter() - started) * 1e3)
print(json.dumps(times))
"""


def measure(python: Path, uses: int) -> list[float]:
    # -I: this checkout is not on sys.path, so each venv imports its own jumpstarter.
    done = subprocess.run([str(python), "-I", "-c", PEER, str(uses)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{python}: failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uses", type=int, default=40, help="serve() uses per round and side")
    options = parser.parse_args()
    for python in PYTHONS.values():
        if not python.exists():
            sys.exit(f"{python} is missing: run scripts/setup.sh (ours) and scripts/setup-upstream.sh (upstream)")
    medians: dict[str, list[float]] = {side: [] for side in PYTHONS}
    for _ in range(options.rounds):
        for side, python in PYTHONS.items():
            medians[side].append(statistics.median(measure(python, options.uses)))
    ours, upstream = statistics.median(medians["ours"]), statistics.median(medians["upstream"])
    print(f"serve(): enter + one call + exit, median of {options.rounds} rounds x {options.uses} uses")
    print(f"{'upstream 0.9.0':16} {upstream:8.2f} ms")
    print(f"{'ours':16} {ours:8.2f} ms")
    print(f"{'ratio ours/upstream':20} {ours / upstream:6.2f}")


if __name__ == "__main__":
    main()
