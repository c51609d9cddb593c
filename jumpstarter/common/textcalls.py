"""DriverCall messages that carry big text, encoded and parsed here rather than by protobuf, for big strings' sake.

Through protobuf, a 1 MiB string argument or result is copied into the message, serialized (into upb's buffer,
then into bytes), parsed (a copy and a UTF-8 check) and read out (a copy and a UTF-8 check again): five copies and
two checks a hop. By hand it is encoded once and joined behind its header, and decoded once out of the received
bytes, which checks it: three copies and one check. The bytes are exactly protobuf's, so upstream's clients and
exporters read and write them as ever. Anything else goes to protobuf: a message under ``BIG`` (protobuf is faster
for those), a value that isn't a plain str, and a message that doesn't parse here (protobuf then raises its
DecodeError, or reads what this parser doesn't, such as fields in another order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from jumpstarter.common.frames import read_varint, varint
from jumpstarter.v1.jumpstarter_pb2 import DriverCallRequest, DriverCallResponse

METHOD = "/jumpstarter.v1.ExporterService/DriverCall"
BIG = 64 * 1024  # the smallest message (or text) worth encoding by hand
# The most arguments a call encoded by hand has: a request of many (small) ones is protobuf's, which parses them
# faster, and the exporter decodes them off its event loop (exporter.session.DECODE_INLINE).
MAX_ARGS = 8

# Tags: field number << 3 | 2 (length-delimited). DriverCallRequest: uuid = 1, method = 2, args = 3;
# DriverCallResponse: uuid = 1, result = 2; google.protobuf.Value: string_value = 3.
_UUID, _METHOD, _ARG, _RESULT, _STRING = 0x0A, 0x12, 0x1A, 0x12, 0x1A


class TextCall(NamedTuple):
    """A DriverCallRequest whose arguments are all strings, as ``parse_request`` reads it."""

    uuid: str
    method: str
    args: list[str]


class TextResult(NamedTuple):
    """A DriverCallResponse whose result is a string, as ``parse_response`` reads it."""

    value: str


class TextReply(NamedTuple):
    """A DriverCallResponse whose result is a big string (``text``, its UTF-8), for ``serialize_response``."""

    uuid: str
    text: bytes


def encode_request(uuid: str, method: str, args: tuple[Any, ...]) -> bytes | None:
    """A DriverCallRequest's bytes when ``args`` are all str and big together; None otherwise (protobuf's job)."""
    if not 0 < len(args) <= MAX_ARGS or any(type(arg) is not str for arg in args) or sum(map(len, args)) < BIG:
        return None
    try:
        parts = [*_string(_UUID, uuid), *_string(_METHOD, method)]
        for arg in args:
            parts += _text_value(_ARG, arg.encode())
    except UnicodeEncodeError:  # a lone surrogate: protobuf refuses it, as it always has
        return None
    return b"".join(parts)


def serialize_request(request: DriverCallRequest | bytes) -> bytes:
    """A DriverCallRequest's bytes; or the bytes ``encode_request`` made of one."""
    return request if type(request) is bytes else DriverCallRequest.SerializeToString(request)


def driver_call(channel: Any) -> Any:
    """ExporterService.DriverCall on ``channel`` (blocking or grpc.aio): it takes a DriverCallRequest or the bytes
    ``encode_request`` made, and returns a DriverCallResponse or a TextResult."""
    return channel.unary_unary(METHOD, request_serializer=serialize_request, response_deserializer=parse_response)


def reply(uuid: str, result: Any) -> TextReply | None:
    """The reply to send for ``result`` when it is a big str; None otherwise (a DriverCallResponse's job)."""
    if type(result) is not str or len(result) < BIG:
        return None
    try:
        return TextReply(uuid, result.encode())
    except UnicodeEncodeError:  # a lone surrogate: protobuf refuses it, as it always has
        return None


def serialize_response(response: DriverCallResponse | TextReply) -> bytes:
    """The bytes of a DriverCallResponse, or of a TextReply as protobuf would encode the same response."""
    if type(response) is not TextReply:
        return DriverCallResponse.SerializeToString(response)
    return b"".join((*_string(_UUID, response.uuid), *_text_value(_RESULT, response.text)))


def parse_request(data: bytes) -> DriverCallRequest | TextCall:
    """A big DriverCallRequest of str arguments as a TextCall; any other as protobuf parses it."""
    return _by_hand(data, _text_call) or DriverCallRequest.FromString(data)


def parse_response(data: bytes) -> DriverCallResponse | TextResult:
    """A big DriverCallResponse of a str result as a TextResult; any other as protobuf parses it."""
    return _by_hand(data, _text_result) or DriverCallResponse.FromString(data)


def _by_hand(data: bytes, read: Callable[[memoryview], Any]) -> Any:
    """What ``read`` makes of a big message; None for a small one, or one not laid out as ``read`` expects, or not
    UTF-8 (protobuf then reads it, or says what is wrong)."""
    if len(data) < BIG:
        return None
    try:
        return read(memoryview(data))
    except ValueError:
        return None


def _text_call(view: memoryview) -> TextCall | None:
    at, uuid = _read_string(view, 0, _UUID)
    at, method = _read_string(view, at, _METHOD)
    args: list[str] = []
    while at < len(view) and len(args) < MAX_ARGS:
        at, arg = _read_text_value(view, at, _ARG)
        args.append(arg)
    return TextCall(uuid, method, args) if args and at == len(view) else None


def _text_result(view: memoryview) -> TextResult | None:
    at, _ = _read_string(view, 0, _UUID)
    at, value = _read_text_value(view, at, _RESULT)
    return TextResult(value) if at == len(view) else None


def _string(tag: int, text: str) -> tuple[bytes, ...]:
    """A string field, as parts to join; none for "" (proto3 leaves out a field at its default)."""
    if not text:
        return ()
    data = text.encode()
    return bytes((tag,)), varint(len(data)), data


def _text_value(tag: int, text: bytes) -> tuple[bytes, ...]:
    """A google.protobuf.Value field holding the string ``text`` (UTF-8), as parts to join."""
    size = varint(len(text))
    return bytes((tag,)), varint(1 + len(size) + len(text)), bytes((_STRING,)), size, text


def _read_string(view: memoryview, at: int, tag: int) -> tuple[int, str]:
    """The string field ``tag`` at ``at`` and where it ends; "" (and ``at``) if another field is there."""
    if at >= len(view) or view[at] != tag:
        return at, ""
    start, end = _span(view, at + 1)
    return end, str(view[start:end], "utf-8")


def _read_text_value(view: memoryview, at: int, tag: int) -> tuple[int, str]:
    """The Value field ``tag`` at ``at``, which must hold a string and nothing else; and where it ends."""
    if at >= len(view) or view[at] != tag:
        raise ValueError("another field, or none")
    start, end = _span(view, at + 1)
    if start >= end or view[start] != _STRING:
        raise ValueError("not a string value")
    text_start, text_end = _span(view, start + 1)
    if text_end != end:
        raise ValueError("not a string value alone")
    return end, str(view[text_start:text_end], "utf-8")


def _span(view: memoryview, at: int) -> tuple[int, int]:
    """Where the bytes of the length-delimited field whose length is at ``at`` start and end."""
    size, start = read_varint(view, at)
    if size < 0 or start + size > len(view):
        raise ValueError("truncated")
    return start, start + size
