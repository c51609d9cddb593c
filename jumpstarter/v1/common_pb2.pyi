from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ExporterStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORTER_STATUS_UNSPECIFIED: _ClassVar[ExporterStatus]
    EXPORTER_STATUS_OFFLINE: _ClassVar[ExporterStatus]
    EXPORTER_STATUS_AVAILABLE: _ClassVar[ExporterStatus]
    EXPORTER_STATUS_BEFORE_LEASE_HOOK: _ClassVar[ExporterStatus]
    EXPORTER_STATUS_LEASE_READY: _ClassVar[ExporterStatus]
    EXPORTER_STATUS_AFTER_LEASE_HOOK: _ClassVar[ExporterStatus]
    EXPORTER_STATUS_BEFORE_LEASE_HOOK_FAILED: _ClassVar[ExporterStatus]
    EXPORTER_STATUS_AFTER_LEASE_HOOK_FAILED: _ClassVar[ExporterStatus]

class LogSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_SOURCE_UNSPECIFIED: _ClassVar[LogSource]
    LOG_SOURCE_DRIVER: _ClassVar[LogSource]
    LOG_SOURCE_BEFORE_LEASE_HOOK: _ClassVar[LogSource]
    LOG_SOURCE_AFTER_LEASE_HOOK: _ClassVar[LogSource]
    LOG_SOURCE_SYSTEM: _ClassVar[LogSource]
EXPORTER_STATUS_UNSPECIFIED: ExporterStatus
EXPORTER_STATUS_OFFLINE: ExporterStatus
EXPORTER_STATUS_AVAILABLE: ExporterStatus
EXPORTER_STATUS_BEFORE_LEASE_HOOK: ExporterStatus
EXPORTER_STATUS_LEASE_READY: ExporterStatus
EXPORTER_STATUS_AFTER_LEASE_HOOK: ExporterStatus
EXPORTER_STATUS_BEFORE_LEASE_HOOK_FAILED: ExporterStatus
EXPORTER_STATUS_AFTER_LEASE_HOOK_FAILED: ExporterStatus
LOG_SOURCE_UNSPECIFIED: LogSource
LOG_SOURCE_DRIVER: LogSource
LOG_SOURCE_BEFORE_LEASE_HOOK: LogSource
LOG_SOURCE_AFTER_LEASE_HOOK: LogSource
LOG_SOURCE_SYSTEM: LogSource
