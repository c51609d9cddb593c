"""Values on the wire: what protobuf Values carry, exact ints, and per-annotation argument checks."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from jumpstarter.signature import ArgumentError, Signature
from jumpstarter.v1 import jumpstarter_pb2
from jumpstarter.values import ValueTypeError, decode_args, decode_result, encode_args, encode_result


def roundtrip_args(*args):
    request = jumpstarter_pb2.DriverCallRequest(uuid="u", method="m")
    encode_args(args, request)
    wire = jumpstarter_pb2.DriverCallRequest.FromString(request.SerializeToString())
    return decode_args(wire)


def roundtrip_result(value):
    response = jumpstarter_pb2.DriverCallResponse(uuid="u")
    encode_result(value, response)
    return decode_result(jumpstarter_pb2.DriverCallResponse.FromString(response.SerializeToString()))


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclass
class Reading:
    volts: float
    samples: int


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -7, 2**53, 1.5, -0.0, "", "ü", [], {}, [1, [2, [3.0]]], {"a": {"b": [None, 1, "x"]}}],
)
def test_values_round_trip_with_their_types(value):
    [back] = roundtrip_args(value)
    assert back == value and type(back) is type(value)
    back = roundtrip_result(value)
    assert back == value and type(back) is type(value)


def test_tuples_arrive_as_lists_and_rich_values_as_plain_data():
    assert roundtrip_result((1, 2)) == [1, 2]
    assert roundtrip_result(Color.RED) == "red"
    assert roundtrip_result(Level.HIGH) == 3 and type(roundtrip_result(Level.HIGH)) is int
    assert roundtrip_result(Reading(1.5, 10)) == {"volts": 1.5, "samples": 10}


def test_without_int_paths_numbers_are_floats_as_upstream_sends_them():
    request = jumpstarter_pb2.DriverCallRequest(uuid="u", method="m")
    encode_args(({"baud": 20000},), request)
    request.ClearField("int_paths")  # what an upstream client sends
    assert decode_args(request) == [{"baud": 20000.0}]
    assert type(decode_args(request)[0]["baud"]) is float


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x80raw", r"^argument 1: bytes value that isn't UTF-8 text can't be sent \(byte 0 is 0x80\); use @export"),
        ([bytearray(b"ok\xc3")], r"^argument 1\[0\]: bytearray value that isn't UTF-8"),
        ({1: "a"}, r"dict key 1 is int, not str"),
        ([1, {"deep": object()}], r"^argument 1\[1\]\['deep'\]: object can't be sent"),
        (2**60, r"too large to travel exactly"),
        (1 + 2j, r"complex can't be sent"),
    ],
)
def test_values_that_cant_travel_name_type_and_place(value, message):
    with pytest.raises(ValueTypeError, match=message):
        roundtrip_args(value)


def test_bytes_travel_as_utf8_text_and_a_bytes_parameter_gets_bytes_back():
    assert roundtrip_args(b"\x01\x02 caf\xc3\xa9") == ["\x01\x02 café"]  # upstream's wire form: text
    assert roundtrip_result(bytearray(b"ok")) == "ok"

    def download(address: int, data: bytes, spare: bytearray | None = None):
        pass

    bound = Signature(download, "download").bind([4096.0, "\x01\x02 café", "x"])
    assert bound == [4096, b"\x01\x02 caf\xc3\xa9", bytearray(b"x")]
    assert type(bound[1]) is bytes and type(bound[2]) is bytearray
    with pytest.raises(ArgumentError, match="argument 'data' must be bytes, got int 5"):
        Signature(download, "download").bind([1, 5])


def typed(a: int, b: float, flag: bool, names: list[str], table: dict[str, int], maybe: Optional[int] = None):  # noqa: UP045
    pass


def choose(mode: Literal["fast", "slow"], level: Level, *rest: int):
    pass


def test_signature_converts_what_upstream_sends_as_floats():
    sig = Signature(typed, "typed")
    assert sig.bind([20000.0, 1, True, ["x"], {"k": 2.0}]) == [20000, 1.0, True, ["x"], {"k": 2}]
    out = sig.bind([20000.0, 1, True, ["x"], {"k": 2.0}, 5.0])
    assert out == [20000, 1.0, True, ["x"], {"k": 2}, 5]
    assert [type(v) for v in out] == [int, float, bool, list, dict, int]
    assert type(out[4]["k"]) is int
    assert Signature(choose, "choose").bind(["fast", 3.0, 1.0, 2.0]) == ["fast", Level.HIGH, 1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([1], r"typed\(a, b, flag, names, table, maybe\): missing argument 'b', 'flag', 'names', 'table'"),
        ([1, 2, True, [], {}, None, 7], r"takes at most 6 arguments, got 7"),
        ([1.5, 2, True, [], {}], r"argument 'a' must be int, got float 1.5"),
        ([1, "2", True, [], {}], r"argument 'b' must be float, got str '2'"),
        ([1, 2, 1, [], {}], r"argument 'flag' must be bool, got int 1"),
        ([1, 2, True, ["a", 3], {}], r"argument 'names'.*str"),
        ([1, 2, True, [], {"k": "v"}], r"argument 'table'.*int"),
    ],
)
def test_signature_rejects_wrong_calls_naming_the_parameter(args, message):
    with pytest.raises(ArgumentError, match=message):
        Signature(typed, "typed").bind(args)


def test_literal_and_enum_mismatches():
    sig = Signature(choose, "choose")
    with pytest.raises(ArgumentError, match=r"argument 'mode' must be one of \('fast', 'slow'\)"):
        sig.bind(["medium", 3])
    with pytest.raises(ArgumentError, match=r"argument 'rest\[1\]' must be int"):
        sig.bind(["fast", 3, 1, "x"])
