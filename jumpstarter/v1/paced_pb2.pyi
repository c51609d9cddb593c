from jumpstarter.v1 import jumpstarter_pb2 as _jumpstarter_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PacedRequest(_message.Message):
    __slots__ = ("call", "wanted")
    CALL_FIELD_NUMBER: _ClassVar[int]
    WANTED_FIELD_NUMBER: _ClassVar[int]
    call: _jumpstarter_pb2.StreamingDriverCallRequest
    wanted: int
    def __init__(self, call: _Optional[_Union[_jumpstarter_pb2.StreamingDriverCallRequest, _Mapping]] = ..., wanted: _Optional[int] = ...) -> None: ...
