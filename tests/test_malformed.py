"""Malformed requests (issue 13, item 14), sent raw with the generated stubs to a served exporter: each gets a fitting
status code and a message saying what was wrong, and leaves one line in the exporter's log, no traceback."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import ListValue, Value
from jumpstarter_driver_demo import Board, Power

from jumpstarter.common.utils import serve
from jumpstarter.driver import export
from jumpstarter.v1 import jumpstarter_pb2, jumpstarter_pb2_grpc, lease_pb2, lease_pb2_grpc, router_pb2_grpc
from jumpstarter.values import encode

INVALID, NOT_FOUND, UNIMPLEMENTED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
)


@dataclass(kw_only=True)
class Target(Board):
    @export
    def tags(self, items: set) -> int:
        return len(items)


def value(obj: Any) -> Value:
    out = Value()
    encode(obj, out, [], (), 1000)
    return out


def paths(*steps: Value) -> jumpstarter_pb2.IntPaths:
    """int_paths with one path of ``steps``."""
    int_paths = jumpstarter_pb2.IntPaths()
    path = int_paths.paths.add()
    for step in steps:
        path.values.add().CopyFrom(step)
    return int_paths


def number(x: float) -> Value:
    return Value(number_value=x)


class Peer:
    """Raw stubs on a served exporter; ``uuid`` is its Target's."""

    def __init__(self, channel: grpc.Channel, uuid: str) -> None:
        self.channel, self.uuid = channel, uuid
        self.exporter = jumpstarter_pb2_grpc.ExporterServiceStub(channel)
        self.router = router_pb2_grpc.RouterServiceStub(channel)
        self.leases = lease_pb2_grpc.LeaseServiceStub(channel)

    def call(self, method: str = "echo", *args: Value, uuid: str | None = None, **fields: Any) -> Any:
        request = jumpstarter_pb2.DriverCallRequest(uuid=self.uuid if uuid is None else uuid, method=method, **fields)
        request.args.extend(args)
        return self.exporter.DriverCall(request, timeout=10)

    def streaming(self, method: str = "count", *args: Value, uuid: str | None = None, **fields: Any) -> Any:
        request = jumpstarter_pb2.StreamingDriverCallRequest(
            uuid=self.uuid if uuid is None else uuid, method=method, **fields
        )
        request.args.extend(args)
        return list(self.exporter.StreamingDriverCall(request, timeout=10))

    def raw(self, rpc: str, data: bytes) -> Any:
        return self.channel.unary_unary(rpc)(data, timeout=10)

    def raw_streamed(self, rpc: str, data: bytes) -> Any:
        return list(self.channel.unary_stream(rpc)(data, timeout=10))

    def stream(self, request: Any, frames: tuple[bytes, ...] = (), uuid: bool = False) -> Any:
        """RouterService.Stream with metadata ``request`` (a dict is sent as JSON, None leaves it out); ``frames``
        are sent raw."""
        if isinstance(request, dict):
            request = json.dumps({**request, **({"uuid": self.uuid} if uuid else {})})
        metadata = () if request is None else (("request", request),)
        call = self.channel.stream_stream("/jumpstarter.v1.RouterService/Stream")
        return list(call(iter(frames), metadata=metadata, timeout=10))


GARBAGE = b"\xff\xff\xff"
CONSOLE = {"kind": "driver", "method": "console"}

CASES: dict[str, tuple[Callable[[Peer], Any], grpc.StatusCode, str]] = {
    # DriverCall: which driver and method
    "unknown driver": (lambda p: p.call(uuid="nope"), NOT_FOUND, r"^no driver with uuid 'nope' on this exporter$"),
    "no driver at all": (lambda p: p.call(uuid=""), NOT_FOUND, r"^no driver with uuid '' on this exporter$"),
    "a huge uuid": (lambda p: p.call(uuid="u" * 100_000), NOT_FOUND, r"^no driver with uuid 'uuuu.{0,100}$"),
    "a huge method": (lambda p: p.call("m" * 100_000), NOT_FOUND, r"^method 'mmmm.{0,120}does not exist$"),
    "a dunder": (lambda p: p.call("__init__"), NOT_FOUND, r"method '__init__' of Target does not exist"),
    "not exported": (lambda p: p.call("not_exported"), NOT_FOUND, r"'not_exported' of Target is not exported"),
    "a generator called": (lambda p: p.call("count", value(3)), NOT_FOUND, r"reached with streamingcall\(\)"),
    # DriverCall: argument shapes
    "too many arguments": (lambda p: p.call("add", value(1), value(2), value(3)), INVALID, r"takes 2 arguments"),
    "a wrong type": (lambda p: p.call("add", value("x"), value(1)), INVALID, r"argument 'a' must be int, got str"),
    "unhashable set items": (
        lambda p: p.call("tags", value([{"a": 1}])),
        INVALID,
        r"^tags\(items\): argument 'items' must be set, got items that can't be in a set",
    ),
    "an int beyond 2**53": (
        lambda p: p.call("add", number(1e300), value(1), int_paths=paths(number(0))),
        INVALID,
        r"argument 'a' must be int, got float 1e\+300",
    ),
    "args nested past what parses": (
        lambda p: p.raw("/jumpstarter.v1.ExporterService/DriverCall", _nested_request(p.uuid, 60)),
        INVALID,
        r"^malformed DriverCallRequest: .*values nest at most 32 levels",
    ),
    # DriverCall: int_paths
    "int_paths: a NaN step": (
        lambda p: p.call("echo", value([1.0]), int_paths=paths(number(0), number(math.nan))),
        INVALID,
        r"^int_paths: path 1 has a step nan, neither a list index nor a dict key$",
    ),
    "int_paths: a NaN first step": (
        lambda p: p.call("echo", value(1.0), int_paths=paths(number(math.nan))),
        INVALID,
        r"int_paths: path 1 has a step nan",
    ),
    "int_paths: an infinite step": (
        lambda p: p.call("echo", value(1.0), int_paths=paths(number(math.inf))),
        INVALID,
        r"int_paths: path 1 has a step inf",
    ),
    "int_paths: a negative step": (
        lambda p: p.call("echo", value([1.0]), int_paths=paths(number(0), number(-1))),
        INVALID,
        r"int_paths: path 1 has a step -1.0",
    ),
    "int_paths: a fractional step": (
        lambda p: p.call("echo", value([1.0]), int_paths=paths(number(0), number(0.5))),
        INVALID,
        r"int_paths: path 1 has a step 0.5",
    ),
    "int_paths: a list as a step": (
        lambda p: p.call("echo", value([1.0]), int_paths=paths(Value(list_value=ListValue()))),
        INVALID,
        r"int_paths: path 1 has a step list_value",
    ),
    "int_paths: an empty step": (
        lambda p: p.call("echo", value([1.0]), int_paths=paths(Value())),
        INVALID,
        r"int_paths: path 1 has a step an empty value",
    ),
    # DriverCall: resource handles (the driver's own checks)
    "a handle of no upload": (
        lambda p: p.call("checksum", value({"kind": "client_stream"})),
        INVALID,
        r"^no upload None is waiting for Target$",
    ),
    "a presigned handle without url": (
        lambda p: p.call("checksum", value({"kind": "presigned_request"})),
        INVALID,
        r"^a presigned_request handle needs a 'url' and a 'method' \(strings\)",
    ),
    "a presigned handle with a number for url": (
        lambda p: p.call("checksum", value({"kind": "presigned_request", "url": 5, "method": "GET"})),
        INVALID,
        r"presigned_request handle needs",
    ),
    "a presigned handle with a list of headers": (
        lambda p: p.call(
            "checksum", value({"kind": "presigned_request", "url": "http://x/", "method": "GET", "headers": [1]})
        ),
        INVALID,
        r"presigned_request handle needs",
    ),
    "a string that is no handle": (
        lambda p: p.call("checksum", value("{no json")),
        INVALID,
        r"^'\{no json' is not a resource handle",
    ),
    "a handle of an unknown kind": (
        lambda p: p.call("checksum", value({"kind": ["x"]})),
        UNIMPLEMENTED,
        r"^resource kind \['x'\] is not supported here$",
    ),
    # StreamingDriverCall
    "streaming: unknown driver": (lambda p: p.streaming(uuid="nope"), NOT_FOUND, r"no driver with uuid 'nope'"),
    "streaming: a wrong type": (lambda p: p.streaming("count", value("x")), INVALID, r"argument 'n' must be int"),
    "streaming: a NaN int_paths step": (
        lambda p: p.streaming("count", value(1.0), int_paths=paths(number(math.nan))),
        INVALID,
        r"int_paths: path 1 has a step nan",
    ),
    # messages that don't parse
    "DriverCall: garbage": (
        lambda p: p.raw("/jumpstarter.v1.ExporterService/DriverCall", GARBAGE),
        INVALID,
        r"^malformed DriverCallRequest: .*",
    ),
    "StreamingDriverCall: garbage": (
        lambda p: p.raw_streamed("/jumpstarter.v1.ExporterService/StreamingDriverCall", GARBAGE),
        INVALID,
        r"^malformed StreamingDriverCallRequest",
    ),
    "DriverCall: a big argument that isn't UTF-8": (  # a request parsed by hand (jumpstarter.common.textcalls)
        lambda p: p.raw("/jumpstarter.v1.ExporterService/DriverCall", _big_request(p.uuid, b"\xed\xa0\x80")),
        INVALID,
        r"^malformed DriverCallRequest: ",
    ),
    "DriverCall: a big argument of a wrong type": (
        lambda p: p.call("add", value("x" * 100_000), value("y")),
        INVALID,
        r"argument 'a' must be int, got str",
    ),
    "Reset: garbage": (lambda p: p.raw("/jumpstarter.v1.ExporterService/Reset", GARBAGE), INVALID, r"^malformed"),
    "GetReport: garbage": (lambda p: p.raw("/jumpstarter.v1.ExporterService/GetReport", GARBAGE), INVALID, "^malf"),
    "Lease: garbage": (
        lambda p: p.raw_streamed("/jumpstarter.hil.v1.LeaseService/Lease", GARBAGE),
        INVALID,
        r"^malformed LeaseRequest",
    ),
    "LeaseSession: garbage": (
        lambda p: list(
            p.channel.stream_stream("/jumpstarter.hil.v1.LeaseService/LeaseSession")(iter((GARBAGE,)), timeout=10)
        ),
        INVALID,
        r"^malformed LeaseSessionRequest: ",
    ),
    # RouterService.Stream: its metadata
    "stream: no metadata": (lambda p: p.stream(None), INVALID, r"^stream: metadata 'request' must be a JSON object"),
    "stream: not JSON": (lambda p: p.stream("{{{"), INVALID, r"metadata 'request' must be a JSON object"),
    "stream: a JSON list": (lambda p: p.stream("[1]"), INVALID, r"metadata 'request' must be a JSON object"),
    "stream: a list for uuid": (
        lambda p: p.stream({"kind": "driver", "uuid": [1], "method": "console"}),
        INVALID,
        r"^stream: metadata 'request': 'uuid' must be a string, got list$",
    ),
    "stream: a dict for method": (
        lambda p: p.stream({"kind": "driver", "method": {}}, uuid=True),
        INVALID,
        r"'method' must be a string, got dict",
    ),
    "stream: a number for kind": (lambda p: p.stream({"kind": 5}), INVALID, r"'kind' must be a string, got int"),
    "stream: an unknown kind": (
        lambda p: p.stream({"kind": "zz" * 1500}),
        UNIMPLEMENTED,
        r"^stream kind 'zzzz.{0,120}is not supported \(only 'driver' and 'resource'\)$",
    ),
    "stream: unknown driver": (
        lambda p: p.stream({**CONSOLE, "uuid": "nope"}),
        NOT_FOUND,
        r"no driver with uuid 'nope'",
    ),
    "stream: not a stream": (
        lambda p: p.stream({"kind": "driver", "method": "echo"}, uuid=True),
        NOT_FOUND,
        r"'echo' is reached with call\(\), not stream\(\)",
    ),
    "stream: a frame that doesn't parse": (
        lambda p: p.stream(CONSOLE, (GARBAGE,), uuid=True),
        INVALID,
        r"^malformed StreamRequest: ",
    ),
    "upload: a list for uuid": (
        lambda p: p.stream({"kind": "resource", "uuid": [1]}),
        INVALID,
        r"'uuid' must be a string, got list",
    ),
    "upload: unknown driver": (
        lambda p: p.stream({"kind": "resource", "uuid": "nope"}),
        NOT_FOUND,
        r"no driver with uuid 'nope'",
    ),
    "paced call: a first request that doesn't parse": (
        lambda p: list(
            p.channel.stream_stream("/jumpstarter.hil.v1.PacedCallService/PacedStreamingDriverCall")(
                iter((GARBAGE,)), timeout=10
            )
        ),
        INVALID,
        r"^malformed PacedRequest: ",
    ),
    "paced call: no call in the first request": (
        lambda p: list(
            p.channel.stream_stream("/jumpstarter.hil.v1.PacedCallService/PacedStreamingDriverCall")(
                iter((b"",)), timeout=10
            )
        ),
        INVALID,
        r"^a paced call's first request carries the call$",
    ),
    "upload: a frame that doesn't parse": (
        lambda p: p.stream({"kind": "resource"}, (GARBAGE,), uuid=True),
        INVALID,
        r"^malformed StreamRequest: ",
    ),
}


def _nested_request(uuid: str, levels: int) -> bytes:
    deep: Any = 1
    for _ in range(levels):
        deep = [deep]
    request = jumpstarter_pb2.DriverCallRequest(uuid=uuid, method="echo")
    request.args.add().CopyFrom(value(deep))
    return request.SerializeToString()


def _big_request(uuid: str, tail: bytes) -> bytes:
    """A DriverCallRequest of one big string argument, which ends in ``tail``."""
    request = jumpstarter_pb2.DriverCallRequest(uuid=uuid, method="echo", args=[value("x" * 100_000)])
    data = request.SerializeToString()
    return data[: len(data) - len(tail)] + tail


@pytest.fixture(scope="module")
def peer():
    with serve(Target(children={"power": Power()})) as client:
        with grpc.insecure_channel(client.connection.address) as channel:
            yield Peer(channel, str(client.uuid))


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_request_gets_a_fitting_code_a_message_and_one_log_line(peer, case, caplog):
    send, code, message = CASES[case]
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.RpcError) as info:
        send(peer)
    err = info.value
    assert err.code() == code, err.details()
    assert err.details() and len(err.details()) < 600
    assert re.search(message, err.details()), err.details()
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and not r.name.startswith("jumpstarter.client")]
    assert [r for r in lines if r.exc_info] == [], [r.getMessage() for r in lines]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "\n" not in lines[0].getMessage()
    assert peer.call("add", value(1), value(2)).result.number_value == 3  # and the exporter goes on


def test_garbage_in_a_lease_session_ends_it_invalid_and_frees_its_lease(peer, caplog):
    caplog.set_level(logging.INFO)
    take = lease_pb2.LeaseSessionRequest(take=lease_pb2.LeaseRequest(holder="me")).SerializeToString()
    session = peer.channel.stream_stream("/jumpstarter.hil.v1.LeaseService/LeaseSession")
    with pytest.raises(grpc.RpcError) as info:
        list(session(iter((take, GARBAGE)), timeout=10))
    assert info.value.code() == INVALID, info.value.details()
    assert re.search(r"^malformed LeaseSessionRequest: ", info.value.details()), info.value.details()
    deadline = time.monotonic() + 10
    while "holder vanished" not in caplog.text:  # the lease it took is free again, once the call has ended there
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.02)
    assert [r for r in caplog.records if r.exc_info] == []
    assert peer.call("add", value(1), value(2)).result.number_value == 3


def test_the_exporter_answers_every_case_above_with_its_lease_held(peer):
    """Every RPC the cases use is still refused without the lease while one is held (the guard comes first)."""
    call = peer.leases.Lease(lease_pb2.LeaseRequest(holder="me"))
    answer = next(call)
    try:
        with pytest.raises(grpc.RpcError) as info:
            peer.raw("/jumpstarter.v1.ExporterService/DriverCall", GARBAGE)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        peer.leases.Release(lease_pb2.ReleaseRequest(lease_id=answer.lease_id))
        call.cancel()
