"""jumpstarter.common.textcalls: DriverCalls of big text by hand, byte for byte what protobuf reads and writes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from google.protobuf.message import DecodeError
from google.protobuf.struct_pb2 import Value
from jumpstarter_driver_demo import Board

from jumpstarter.common.textcalls import (
    BIG,
    MAX_ARGS,
    TextCall,
    TextResult,
    encode_request,
    parse_request,
    parse_response,
    reply,
    serialize_request,
    serialize_response,
)
from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export
from jumpstarter.errors import DriverInvalidArgument
from jumpstarter.v1.jumpstarter_pb2 import DriverCallRequest, DriverCallResponse
from jumpstarter.values import encode_args, encode_result

UUID = "8f2b8a4e-0e5c-4d7b-9b8a-123456789abc"
# Sizes around BIG and where the lengths' varints grow a byte (2**14, 2**21)
SIZES = [BIG, BIG + 1, 2**21 - 8, 2**21 - 1, 2**21, 2**21 + 1]
TEXTS = {
    "ascii": lambda n: "x" * n,
    "latin-1": lambda n: "é" * n,
    "bmp": lambda n: "☃" * n,
    "astral": lambda n: "😀" * n,
    "mixed": lambda n: ("a€😀\x00ü" * n)[:n],
}


def protobuf_request(uuid: str, method: str, args: tuple) -> bytes:
    request = DriverCallRequest(uuid=uuid, method=method)
    encode_args(args, request)
    return request.SerializeToString()


def protobuf_response(uuid: str, result: object) -> bytes:
    response = DriverCallResponse(uuid=uuid)
    encode_result(result, response)
    return response.SerializeToString()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", TEXTS)
def test_a_request_of_big_text_is_protobufs_encoding_and_parses_back(size, kind):
    text = TEXTS[kind](size)
    encoded = encode_request(UUID, "echo", (text,))
    assert encoded == protobuf_request(UUID, "echo", (text,))
    assert parse_request(encoded) == TextCall(UUID, "echo", [text])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", TEXTS)
def test_a_response_of_big_text_is_protobufs_encoding_and_parses_back(size, kind):
    text = TEXTS[kind](size)
    text_reply = reply(UUID, text)
    assert text_reply is not None
    encoded = serialize_response(text_reply)
    assert encoded == protobuf_response(UUID, text)
    assert parse_response(encoded) == TextResult(text)


@pytest.mark.parametrize(
    "uuid, method, args",
    [
        (UUID, "write", ("x" * BIG, "", "ü", "second " * 10)),  # small and empty strings beside a big one
        ("", "", ("x" * BIG,)),  # fields at their default are left out
        ("ü" * 300, "m" * 200, ("x" * BIG,)),  # lengths of two bytes
        (UUID, "write", ("x" * (BIG // MAX_ARGS),) * MAX_ARGS),  # big together
    ],
)
def test_requests_of_several_strings(uuid, method, args):
    encoded = encode_request(uuid, method, args)
    assert encoded == protobuf_request(uuid, method, args)
    assert parse_request(encoded) == TextCall(uuid, method, list(args))


def test_an_empty_uuid_in_a_response_is_left_out():
    text = "x" * BIG
    text_reply = reply("", text)
    assert text_reply is not None and serialize_response(text_reply) == protobuf_response("", text)
    assert parse_response(protobuf_response("", text)) == TextResult(text)


class Text(str):
    pass


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("x" * (BIG - 1),),  # small: protobuf is faster
        ("x" * BIG, 1),  # an int: it needs int_paths
        ("x" * BIG, None),
        (b"x" * BIG,),  # bytes travel as text, once checked to be UTF-8 (values.encode)
        (Text("x" * BIG),),  # a str subclass (a StrEnum) is protobuf's
        ("x" * BIG,) * (MAX_ARGS + 1),  # many arguments are protobuf's
        ("x" * BIG + "\ud800",),  # a lone surrogate: protobuf refuses it
    ],
    ids=["none", "small", "int", "None", "bytes", "subclass", "many", "surrogate"],
)
def test_other_requests_are_left_to_protobuf(args):
    assert encode_request(UUID, "echo", args) is None


@pytest.mark.parametrize("result", ["x" * (BIG - 1), b"x" * BIG, Text("x" * BIG), ["x" * BIG], "x" * BIG + "\udfff"])
def test_other_results_are_left_to_protobuf(result):
    assert reply(UUID, result) is None


def test_a_message_serializes_as_protobuf_serializes_it():
    request = DriverCallRequest(uuid=UUID, method="add", args=[Value(number_value=1)])
    assert serialize_request(request) == request.SerializeToString()
    assert serialize_request(b"as made") == b"as made"
    response = DriverCallResponse(uuid=UUID, result=Value(string_value="small"))
    assert serialize_response(response) == response.SerializeToString()


def big_requests() -> Iterator[tuple[str, DriverCallRequest]]:
    """Big requests that aren't a plain call of str arguments, or not laid out as protobuf lays them out."""
    text = "x" * BIG
    yield "a number beside", DriverCallRequest(uuid=UUID, args=[Value(string_value=text), Value(number_value=2)])
    yield "a list", DriverCallRequest(uuid=UUID, args=[Value(list_value={"values": [Value(string_value=text)]})])
    yield "no arguments", DriverCallRequest(uuid=UUID * 2000, method="echo")
    request = DriverCallRequest(uuid=UUID, args=[Value(string_value=text)])
    request.int_paths.paths.add()
    yield "int_paths", request
    yield "many", DriverCallRequest(uuid=UUID, args=[Value(string_value=text)] * (MAX_ARGS + 1))


@pytest.mark.parametrize("name, request_", list(big_requests()), ids=[name for name, _ in big_requests()])
def test_other_big_requests_parse_as_protobuf_reads_them(name, request_):
    assert parse_request(request_.SerializeToString()) == request_


def test_fields_in_another_order_or_repeated_parse_as_protobuf_reads_them():
    arg = Value(string_value="x" * BIG).SerializeToString()
    field = b"\x1a" + _varint(len(arg)) + arg
    method_last = b"\x0a\x01u" + field + b"\x12\x04echo"
    assert parse_request(method_last) == DriverCallRequest(
        uuid="u", method="echo", args=[Value(string_value="x" * BIG)]
    )
    twice = b"\x1a" + _varint(len(arg) * 2) + arg + arg  # a Value whose string is given twice: the last counts
    assert parse_request(twice) == DriverCallRequest(args=[Value(string_value="x" * BIG)])
    result = b"\x12" + _varint(len(arg)) + arg
    assert parse_response(b"\x0a\x01u" + result + b"\x0a\x01v") == DriverCallResponse(
        uuid="v", result=Value(string_value="x" * BIG)
    )


def test_a_big_response_of_no_string_parses_as_protobuf_reads_it():
    for response in (
        DriverCallResponse(uuid="u" * BIG),  # no result
        DriverCallResponse(uuid="u", result=Value(list_value={"values": [Value(string_value="x" * BIG)]})),
    ):
        assert parse_response(response.SerializeToString()) == response


@pytest.mark.parametrize("where", ["uuid", "argument", "truncated"])
def test_a_malformed_big_request_raises_protobufs_error_naming_the_message(where):
    good = protobuf_request("u", "echo", ("x" * BIG,))
    data = {
        "uuid": good.replace(b"\x0a\x01u", b"\x0a\x01\xff"),
        "argument": good[:-1] + b"\xff",  # not UTF-8
        "truncated": good[:-1],
    }[where]
    with pytest.raises(DecodeError, match="DriverCallRequest"):
        parse_request(data)


@pytest.mark.parametrize("bad", [b"\xff", b"\xed\xa0\x80", b"\xc0\xaf"], ids=["ff", "surrogate", "overlong"])
def test_a_big_response_that_isnt_utf8_raises_protobufs_error(bad):
    good = protobuf_response("u", "x" * BIG)
    with pytest.raises(DecodeError, match="DriverCallResponse"):
        parse_response(good[: -len(bad)] + bad)


@dataclass(kw_only=True)
class Texts(Driver):
    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    def join(self, a: str, b: str) -> str:
        return a + b

    @export
    async def length(self, text: str) -> int:
        return len(text)


@pytest.mark.parametrize("kind", ["ascii", "mixed"])
def test_big_text_travels_both_ways_through_a_served_exporter(kind):
    text = TEXTS[kind](2**20)
    with serve(Board()) as board, serve(Texts()) as texts:
        assert board.echo(text) == text
        assert board.portal.call(board.echo_async, text) == text
        assert board.echo({"text": text}) == {"text": text}  # protobuf's way, in a dict
        assert texts.call("join", text, "ü") == text + "ü"
        assert texts.call("length", text) == 2**20
        with pytest.raises(DriverInvalidArgument, match="takes 2 arguments"):
            texts.call("join", text, "b", "c")
        with pytest.raises(DriverInvalidArgument, match="argument 'a' must be int, got str"):
            board.call("add", text, "1")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes((value,))


def as_message(parsed: DriverCallRequest | TextCall) -> DriverCallRequest:
    if isinstance(parsed, TextCall):
        return DriverCallRequest(
            uuid=parsed.uuid, method=parsed.method, args=[Value(string_value=arg) for arg in parsed.args]
        )
    return parsed


def test_damaged_requests_parse_as_protobuf_reads_them_or_fail_as_it_fails():
    """Bytes changed, cut or added at random places of a big request, near its fields' headers most often: what
    the parser reads is what protobuf reads, and what protobuf refuses it refuses."""
    rng = random.Random(7)
    good = protobuf_request("u" * 20, "echo", ("é" * (BIG // 2), "x" * 300, "y"))
    heads = [0, 1, 2, 21, 22, 23, 28, 29, 30, 31, 32, 33, len(good) - 310, len(good) - 303, len(good) - 3]
    for _ in range(400):
        data = bytearray(good)
        at = rng.choice(heads) if rng.random() < 0.7 else rng.randrange(len(data))
        how = rng.choice(["flip", "cut", "insert"])
        if how == "flip":
            data[at] = rng.randrange(256)
        elif how == "cut":
            del data[at : at + rng.randrange(1, 4)]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        try:
            expected = DriverCallRequest.FromString(bytes(data))
        except DecodeError:
            with pytest.raises(DecodeError):
                parse_request(bytes(data))
        else:
            assert as_message(parse_request(bytes(data))) == expected
