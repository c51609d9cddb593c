"""Names both ends of the wire agree on: metadata keys, gRPC channel options, address forms.

The client and the exporter import them from here, so that importing a client loads no server code.
"""

from __future__ import annotations

import os
import time

# A driver report's labels: the import path of its client class, and its name under its parent.
CLIENT_LABEL = "jumpstarter.dev/client"
NAME_LABEL = "jumpstarter.dev/name"

PASSPHRASE_KEY = "x-jumpstarter-passphrase"  # metadata: the exporter's passphrase, on every call
LEASE_KEY = "x-jumpstarter-lease"  # metadata: the id of the lease a call is made under
# ... and, after this mark, which take of it (a LeaseSession's kept lease is taken again with the same id): "ID#3"
TAKE_MARK = "#"
# The longest lease holder name an exporter takes: it keeps the newest 10,000 leases' names, so they stay within
# some 10 MB and GetLeases' reply within the message limit. Our client shortens longer names.
MAX_HOLDER = 1024
# The most requests a LeaseSession batch may carry: an exporter handles a batch's requests one after another, and
# refuses a bigger one. Our client sends a kept lease's takes and releases every 20 ms, in batches of at most this.
MAX_LEASE_BATCH = 1000
BATCH_KEY = "x-jumpstarter-batch"  # metadata of a StreamingDriverCall: the client takes several items a message
RAW_KEY = "x-jumpstarter-raw"  # a driver byte stream's metadata, and its exporter's headers: no frames (frames.RAW)

PING_TIMEOUT_MS = 3_000

# The most one message of an upload may carry: an exporter refuses a bigger chunk, our client splits its
# source's chunks to fit. Each upload holds one chunk in hand while it waits for room (exporter.limits).
UPLOAD_CHUNK_MAX = 1024 * 1024

# Generous but bounded: a 1 MiB string argument must pass, a runaway one must not exhaust memory.
MAX_MESSAGE = 64 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # Notice a vanished peer (a killed client, a pulled cable) within seconds.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # A ping unanswered this long ends the connection (gRPC's default: 60 s): a call to a frozen exporter (a
    # suspended VM, a tunnel whose far end vanished) fails within seconds instead of hanging a minute.
    ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
]


def grpc_address(address: str) -> str:
    """The gRPC target for an address: ``unix:///p``, ``unix:p``, a path, or ``HOST:PORT``."""
    if address.startswith("unix:"):
        return address
    if address.startswith("/") or address.startswith("./"):
        return f"unix://{os.path.abspath(address)}"
    return address


def when(stamp: float) -> str:
    """A lease's time as both ends show it to people: local ``HH:MM:SS``."""
    return time.strftime("%H:%M:%S", time.localtime(stamp))
