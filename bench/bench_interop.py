"""Our exporter and client beside upstream Jumpstarter 0.9.0's, in every pairing, in one run.

    .venv/bin/python bench/bench_interop.py [--quick]

Both exporters serve tests/upstream/custom.yaml on loopback TCP, each in its own process. Each
client runs bench/interop_peer.py in a process of its own: ours connects by address, upstream's
runs inside `jmp shell`. Measured: unary calls, generator items, byte-stream echo and uploads.
Rounds alternate over the four pairings so that the machine's drifting load falls on all alike;
medians over rounds are reported, with ratios against upstream-to-upstream.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import upstream_peer as peer  # noqa: E402

from jumpstarter.exporter.process import ExporterProcess  # noqa: E402

PEER = ROOT / "bench" / "interop_peer.py"
MEASURES = {
    "unary_us": "unary call, median (us)",
    "items_per_s": "generator items/s",
    "echo_mib_s": "stream echo MiB/s",
    "upload_mib_s": "upload MiB/s",
}
LOWER_IS_BETTER = {"unary_us"}


def run_client(client: str, address: str, upstream_bin: Path, sizes: list[str], cwd: Path) -> dict[str, float]:
    if client == "ours":
        done = subprocess.run(
            [sys.executable, str(PEER), *sizes, address], capture_output=True, text=True, timeout=300, check=False
        )
    else:
        command: list[str | Path] = [upstream_bin / "python", PEER, *sizes]
        done = peer.jmp_shell(upstream_bin, address, command, cwd=cwd, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("MEASURED ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{client} client against {address} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return json.loads(lines[-1].removeprefix("MEASURED "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer calls and one round")
    options = parser.parse_args()
    rounds = 1 if options.quick else 5
    sizes = ["200", "2000", "20"] if options.quick else ["2000", "20000", "400"]  # calls, items, 64 KiB chunks

    upstream_bin = peer.install_upstream()
    pairings = [(c, e) for c in ("ours", "upstream") for e in ("ours", "upstream")]
    results: dict[tuple[str, str], list[dict[str, float]]] = {p: [] for p in pairings}
    with tempfile.TemporaryDirectory() as scratch:
        cwd = Path(scratch)
        ours = ExporterProcess.start(peer.CUSTOM_YAML, "--listen", "127.0.0.1:0")
        try:
            with peer.upstream_exporter(upstream_bin, cwd / "jmp-run.log") as upstream_address:
                addresses = {"ours": ours.address, "upstream": upstream_address}
                for number in range(rounds):
                    order = pairings if number % 2 == 0 else pairings[::-1]
                    for client, exporter in order:
                        results[client, exporter].append(
                            run_client(client, addresses[exporter], upstream_bin, sizes, cwd)
                        )
        finally:
            ours.stop()

    print(f"{rounds} round(s); calls, generator items, 64 KiB echo chunks: {', '.join(sizes)}")
    print(f"{'client -> exporter':22}" + "".join(f"{title:>25}" for title in MEASURES.values()))
    baseline = {m: statistics.median(r[m] for r in results["upstream", "upstream"]) for m in MEASURES}
    for client, exporter in pairings:
        cells = []
        for measure in MEASURES:
            value = statistics.median(r[measure] for r in results[client, exporter])
            ratio = value / baseline[measure]
            better = 1 / ratio if measure in LOWER_IS_BETTER else ratio
            cells.append(f"{value:>12.1f} ({better:4.2f}x)")
        print(f"{client + ' -> ' + exporter:22}" + "".join(f"{cell:>25}" for cell in cells))
    print("(Nx: speed relative to upstream -> upstream; above 1 is faster)")


if __name__ == "__main__":
    main()
