import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from jumpstarter.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Endpoint(_message.Message):
    __slots__ = ("endpoint", "certificate", "client_certificate", "client_private_key")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    certificate: str
    client_certificate: str
    client_private_key: str
    def __init__(self, endpoint: _Optional[str] = ..., certificate: _Optional[str] = ..., client_certificate: _Optional[str] = ..., client_private_key: _Optional[str] = ...) -> None: ...

class DriverInstanceReport(_message.Message):
    __slots__ = ("uuid", "parent_uuid", "labels", "description", "methods_description", "methods_lookahead", "exported_methods")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MethodsDescriptionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MethodsLookaheadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    PARENT_UUID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METHODS_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METHODS_LOOKAHEAD_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_METHODS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    parent_uuid: str
    labels: _containers.ScalarMap[str, str]
    description: str
    methods_description: _containers.ScalarMap[str, str]
    methods_lookahead: _containers.ScalarMap[str, int]
    exported_methods: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, uuid: _Optional[str] = ..., parent_uuid: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ..., methods_description: _Optional[_Mapping[str, str]] = ..., methods_lookahead: _Optional[_Mapping[str, int]] = ..., exported_methods: _Optional[_Iterable[str]] = ...) -> None: ...

class GetReportResponse(_message.Message):
    __slots__ = ("uuid", "labels", "reports", "alternative_endpoints", "motd")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVE_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    MOTD_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    labels: _containers.ScalarMap[str, str]
    reports: _containers.RepeatedCompositeFieldContainer[DriverInstanceReport]
    alternative_endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    motd: str
    def __init__(self, uuid: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., reports: _Optional[_Iterable[_Union[DriverInstanceReport, _Mapping]]] = ..., alternative_endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., motd: _Optional[str] = ...) -> None: ...

class IntPaths(_message.Message):
    __slots__ = ("paths",)
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedCompositeFieldContainer[_struct_pb2.ListValue]
    def __init__(self, paths: _Optional[_Iterable[_Union[_struct_pb2.ListValue, _Mapping]]] = ...) -> None: ...

class DriverCallRequest(_message.Message):
    __slots__ = ("uuid", "method", "args", "int_paths")
    UUID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    INT_PATHS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    method: str
    args: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    int_paths: IntPaths
    def __init__(self, uuid: _Optional[str] = ..., method: _Optional[str] = ..., args: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., int_paths: _Optional[_Union[IntPaths, _Mapping]] = ...) -> None: ...

class DriverCallResponse(_message.Message):
    __slots__ = ("uuid", "result", "int_paths")
    UUID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    INT_PATHS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    result: _struct_pb2.Value
    int_paths: IntPaths
    def __init__(self, uuid: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., int_paths: _Optional[_Union[IntPaths, _Mapping]] = ...) -> None: ...

class StreamingDriverCallRequest(_message.Message):
    __slots__ = ("uuid", "method", "args", "int_paths")
    UUID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    INT_PATHS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    method: str
    args: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    int_paths: IntPaths
    def __init__(self, uuid: _Optional[str] = ..., method: _Optional[str] = ..., args: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., int_paths: _Optional[_Union[IntPaths, _Mapping]] = ...) -> None: ...

class StreamingDriverCallResponse(_message.Message):
    __slots__ = ("uuid", "result", "int_paths", "items")
    UUID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    INT_PATHS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    result: _struct_pb2.Value
    int_paths: IntPaths
    items: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, uuid: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., int_paths: _Optional[_Union[IntPaths, _Mapping]] = ..., items: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class LogStreamResponse(_message.Message):
    __slots__ = ("uuid", "severity", "message", "source", "driver_type", "operation", "timestamp", "structured_fields")
    class StructuredFieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_TYPE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    severity: str
    message: str
    source: _common_pb2.LogSource
    driver_type: str
    operation: str
    timestamp: _timestamp_pb2.Timestamp
    structured_fields: _containers.ScalarMap[str, str]
    def __init__(self, uuid: _Optional[str] = ..., severity: _Optional[str] = ..., message: _Optional[str] = ..., source: _Optional[_Union[_common_pb2.LogSource, str]] = ..., driver_type: _Optional[str] = ..., operation: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., structured_fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("status", "message", "status_version", "previous_status")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.ExporterStatus
    message: str
    status_version: int
    previous_status: _common_pb2.ExporterStatus
    def __init__(self, status: _Optional[_Union[_common_pb2.ExporterStatus, str]] = ..., message: _Optional[str] = ..., status_version: _Optional[int] = ..., previous_status: _Optional[_Union[_common_pb2.ExporterStatus, str]] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
