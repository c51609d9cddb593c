"""One client's speed against one exporter, for bench/bench_interop.py.

    python interop_peer.py CALLS ITEMS CHUNKS [ADDRESS]

With ADDRESS it runs under our python and connects with our client; without, it runs under
upstream's python inside `jmp shell` and takes upstream's client from the shell. Both use only
what the two client APIs share (call, streamingcall, stream, children[...], and the demo client's
checksum(), which uploads through portal and resource_async). Prints one JSON line.
"""

import json
import statistics
import sys
import time

CHUNK = 64 * 1024
MIB = 1024 * 1024


def measure(board, calls: int, items: int, chunks: int) -> dict:
    for _ in range(20):  # warm the connection and the exporter's workers
        board.call("add", 2, 3)
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        board.call("add", 2, 3)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    count = sum(1 for _ in board.streamingcall("count", items))
    generator = count / (time.perf_counter() - started)

    chunk = bytes(CHUNK)
    with board.stream("console") as stream:
        started = time.perf_counter()
        for _ in range(chunks):
            stream.send(chunk)
            received = 0
            while received < CHUNK:
                received += len(stream.receive())
        echo = chunks * CHUNK / MIB / (time.perf_counter() - started)

    image = bytes(chunks * CHUNK)  # an upload (resource stream) of the same size, checksummed by the driver
    started = time.perf_counter()
    board.checksum(image)
    upload = len(image) / MIB / (time.perf_counter() - started)
    return {
        "unary_us": statistics.median(latencies) * 1e6,
        "items_per_s": generator,
        "echo_mib_s": echo,
        "upload_mib_s": upload,
    }


def main() -> None:
    calls, items, chunks = map(int, sys.argv[1:4])
    if len(sys.argv) > 4:
        from jumpstarter.client import connect

        with connect(sys.argv[4]) as client:
            result = measure(client.children["board"], calls, items, chunks)
    else:
        from jumpstarter.utils.env import env

        with env() as client:
            result = measure(client.children["board"], calls, items, chunks)
    print("MEASURED " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
