"""A script as upstream's users write them: run inside a `jmp shell` (upstream's or our `jumpstarter shell`)
by upstream's python or ours, it drives the shell's exporter through that python's client.

Prints one JSON object: for each call, the value that came back or the exception the client raised
(its class, the names of its bases, its message). tests/test_upstream.py asserts on it.
"""

import gzip
import json

from anyio import EndOfStream
from jumpstarter_driver_demo.client import Chunks

from jumpstarter.utils.env import env


def outcome(call):
    try:
        return {"value": call()}
    except Exception as exc:
        return {"error": type(exc).__name__, "bases": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}


def console(board):
    """Echo two chunks, end our side, and read until the driver ends its side."""
    with board.stream("console") as stream:
        echoed = []
        for chunk in (b"ping", b"\x00\xffbinary"):
            stream.send(chunk)
            echoed.append(stream.receive().decode("latin-1"))
        if hasattr(stream, "send_eof"):
            stream.send_eof()
        else:  # upstream's BlockingStream has no send_eof of its own
            stream.portal.call(stream.stream.send_eof)
        try:
            stream.receive()
            ended = False
        except EndOfStream:
            ended = True
    return {"echoed": echoed, "ended": ended}


def gzipped_checksum(board, data):
    """Upload ``data`` gzip-compressed, saying so; the driver must see it plain."""
    source = Chunks(gzip.compress(data))
    with board.portal.wrap_async_context_manager(board.resource_async(source, "gzip")) as handle:
        return board.call("checksum", handle)


BIG_TEXT = "é☃😀x" * 100_000  # our exporter parses and encodes it by hand (jumpstarter.common.textcalls)

with env() as client:
    board = client.board
    power = board.children["power"]  # upstream's DriverClient has no child attributes; children[] works on both
    results = {
        "client": type(client).__module__ + "." + type(client).__name__,
        "children": sorted(client.children),
        "board_client": type(board).__module__ + "." + type(board).__name__,
        "plain": outcome(lambda: client.custom.execute("echo", ["hello"])),
        "add": outcome(lambda: board.add(2, 3)),
        "describe": outcome(board.describe),
        "echo_int": outcome(lambda: board.echo(20000)),
        "big_text": outcome(lambda: board.echo(BIG_TEXT) == BIG_TEXT),
        "async": outcome(lambda: board.wait(0.01)),
        "generator": outcome(lambda: list(board.count(3))),
        "async_generator": outcome(lambda: list(board.ticks(3))),
        "stream": outcome(lambda: console(board)),
        "child": outcome(lambda: (power.on(), power.read())[1]),
        "proxy": outcome(lambda: (client.children["dut-power"].off(), power.read())[1]),  # one driver, two paths
        "upload": outcome(lambda: board.checksum(bytes(range(256)) * 4000)),  # a resource stream
        "upload_gzip": outcome(lambda: gzipped_checksum(board, bytes(range(256)) * 4000)),
        "not_found": outcome(lambda: board.call("not_exported")),
        **{
            f"raises_{kind}": outcome(lambda k=kind: board.fail(k, f"{k} boom"))
            for kind in ("value", "notimplemented", "timeout", "other")
        },
        "after_errors": outcome(lambda: board.add(1, 1)),
    }
    print("RESULTS " + json.dumps(results))
