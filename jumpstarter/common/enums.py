"""The protocol's status and log-source enums as IntEnums, so code can compare and print them by name.

The values are the protobuf constants of ``jumpstarter.v1.common_pb2``; ``from_proto``/``to_proto`` convert
between the two without a lookup table that could drift from the .proto.
"""

from __future__ import annotations

from enum import IntEnum

from jumpstarter.v1 import common_pb2

__all__ = ["ExporterStatus", "LogSource"]


class _ProtoEnum(IntEnum):
    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_proto(cls, value: int) -> _ProtoEnum:
        """The member for a protobuf enum value (ValueError for one this version doesn't know)."""
        return cls(value)

    def to_proto(self) -> int:
        """The protobuf enum value."""
        return int(self.value)


class ExporterStatus(_ProtoEnum):
    """Where an exporter is in its lease lifecycle."""

    UNSPECIFIED = common_pb2.EXPORTER_STATUS_UNSPECIFIED
    OFFLINE = common_pb2.EXPORTER_STATUS_OFFLINE
    AVAILABLE = common_pb2.EXPORTER_STATUS_AVAILABLE  # may be leased
    BEFORE_LEASE_HOOK = common_pb2.EXPORTER_STATUS_BEFORE_LEASE_HOOK  # leased, running the before-lease hook
    LEASE_READY = common_pb2.EXPORTER_STATUS_LEASE_READY  # leased and taking calls
    AFTER_LEASE_HOOK = common_pb2.EXPORTER_STATUS_AFTER_LEASE_HOOK  # released, running the after-lease hook
    BEFORE_LEASE_HOOK_FAILED = common_pb2.EXPORTER_STATUS_BEFORE_LEASE_HOOK_FAILED  # out of service
    AFTER_LEASE_HOOK_FAILED = common_pb2.EXPORTER_STATUS_AFTER_LEASE_HOOK_FAILED  # out of service


class LogSource(_ProtoEnum):
    """Who produced a log record an exporter streams to its client."""

    UNSPECIFIED = common_pb2.LOG_SOURCE_UNSPECIFIED
    DRIVER = common_pb2.LOG_SOURCE_DRIVER
    BEFORE_LEASE_HOOK = common_pb2.LOG_SOURCE_BEFORE_LEASE_HOOK
    AFTER_LEASE_HOOK = common_pb2.LOG_SOURCE_AFTER_LEASE_HOOK
    SYSTEM = common_pb2.LOG_SOURCE_SYSTEM  # the exporter itself
