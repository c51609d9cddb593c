"""jumpstarter.common.frames: RouterService.Stream's frames by hand, byte for byte what protobuf reads and writes."""

from __future__ import annotations

import json
import queue

import grpc
import pytest
from google.protobuf.message import DecodeError

from jumpstarter.common.frames import DATA, GOAWAY, Frame, encode, parse_request, parse_response, raw_stream_method
from jumpstarter.common.wire import RAW_KEY
from jumpstarter.v1 import router_pb2

SIZES = [0, 1, 127, 128, 300, 16383, 16384, 64 * 1024, 2**21 - 1, 2**21]


@pytest.mark.parametrize("size", SIZES)
def test_a_data_frame_is_protobufs_encoding(size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert encode(payload) == router_pb2.StreamRequest(payload=payload).SerializeToString()
    assert router_pb2.StreamResponse.FromString(encode(payload)).payload == payload


def test_none_is_goaway():
    assert router_pb2.StreamRequest.FromString(encode(None)).frame_type == GOAWAY


@pytest.mark.parametrize("size", SIZES)
def test_protobufs_data_frames_parse(size):
    payload = b"\xa5" * size
    for message, parse in ((router_pb2.StreamRequest, parse_request), (router_pb2.StreamResponse, parse_response)):
        assert parse(message(payload=payload).SerializeToString()) == Frame(payload, DATA)


@pytest.mark.parametrize(
    "message",
    [
        router_pb2.StreamRequest(frame_type=GOAWAY),
        router_pb2.StreamRequest(payload=b"last words", frame_type=GOAWAY),
        router_pb2.StreamRequest(frame_type=router_pb2.FRAME_TYPE_PING),
        router_pb2.StreamRequest(payload=b"x", frame_type=router_pb2.FRAME_TYPE_RST_STREAM),
    ],
)
def test_other_frames_parse_as_protobuf_reads_them(message):
    assert parse_request(message.SerializeToString()) == Frame(message.payload, message.frame_type)


def test_fields_in_another_order_or_repeated_parse_as_protobuf_reads_them():
    # frame_type first, then the payload; a payload given twice (the last one counts)
    assert parse_request(b"\x10\x07\x0a\x02hi") == Frame(b"hi", GOAWAY)
    assert parse_request(b"\x0a\x01a\x0a\x01b") == Frame(b"b", DATA)


@pytest.mark.parametrize("data", [b"\x0a", b"\x0a\x05ab", b"\x0a\xff", b"\x0a" + b"\xff" * 11 + b"\x01", b"\xff"])
def test_a_malformed_frame_raises_protobufs_error_naming_the_message(data):
    with pytest.raises(DecodeError, match="StreamRequest"):
        parse_request(data)
    with pytest.raises(DecodeError, match="StreamResponse"):
        parse_response(data)


def _open_console(client, raw: bool):
    """The demo board's console stream opened by hand: RouterService.Stream with bytes for messages."""
    request = json.dumps({"kind": "driver", "uuid": client.uuid, "method": "console"})
    metadata = (("request", request), (RAW_KEY, "1")) if raw else (("request", request),)
    outbox: queue.SimpleQueue = queue.SimpleQueue()
    call = raw_stream_method(client.connection.channel)(iter(outbox.get, None), metadata=metadata)
    return outbox, call


@pytest.mark.parametrize("raw", [True, False], ids=["asked-unframed", "upstream-client"])
def test_a_driver_stream_goes_unframed_only_for_a_client_that_asks(board_client, raw):
    """Our client asks for no frames and the exporter says yes in its headers; upstream's client doesn't ask and
    gets protobuf's frames, its end a GOAWAY frame. Unframed, a side's end is its half-close."""
    outbox, call = _open_console(board_client, raw)
    assert (dict(call.initial_metadata()).get(RAW_KEY) == "1") is raw
    messages = iter(call)
    for payload in (b"\x0a\x03abc", b"x" * 70_000):  # the first looks like a frame: unframed, it is a payload
        outbox.put(payload if raw else encode(payload))
        assert next(messages) == (payload if raw else encode(payload))
    outbox.put(None if raw else encode(None))  # unframed: the end of the requests; framed: GOAWAY, then the end
    if not raw:
        outbox.put(None)
    assert list(messages) == ([] if raw else [encode(None)])  # the driver's side ended too (send_eof echoed)
    assert call.code() == grpc.StatusCode.OK
