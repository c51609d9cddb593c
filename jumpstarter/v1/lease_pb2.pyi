from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseRequest(_message.Message):
    __slots__ = ("holder", "keep", "at")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    holder: str
    keep: bool
    at: float
    def __init__(self, holder: _Optional[str] = ..., keep: _Optional[bool] = ..., at: _Optional[float] = ...) -> None: ...

class LeaseResponse(_message.Message):
    __slots__ = ("lease_id", "holder", "since", "keeps", "wanted", "handed", "hurry", "hooks")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    KEEPS_FIELD_NUMBER: _ClassVar[int]
    WANTED_FIELD_NUMBER: _ClassVar[int]
    HANDED_FIELD_NUMBER: _ClassVar[int]
    HURRY_FIELD_NUMBER: _ClassVar[int]
    HOOKS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    holder: str
    since: float
    keeps: bool
    wanted: bool
    handed: bool
    hurry: bool
    hooks: _containers.RepeatedCompositeFieldContainer[HookRun]
    def __init__(self, lease_id: _Optional[str] = ..., holder: _Optional[str] = ..., since: _Optional[float] = ..., keeps: _Optional[bool] = ..., wanted: _Optional[bool] = ..., handed: _Optional[bool] = ..., hurry: _Optional[bool] = ..., hooks: _Optional[_Iterable[_Union[HookRun, _Mapping]]] = ...) -> None: ...

class HookRun(_message.Message):
    __slots__ = ("hook", "holder", "started", "ended", "failure", "on_failure", "output")
    HOOK_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    hook: str
    holder: str
    started: float
    ended: float
    failure: str
    on_failure: str
    output: str
    def __init__(self, hook: _Optional[str] = ..., holder: _Optional[str] = ..., started: _Optional[float] = ..., ended: _Optional[float] = ..., failure: _Optional[str] = ..., on_failure: _Optional[str] = ..., output: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id", "keep", "at")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    keep: bool
    at: float
    def __init__(self, lease_id: _Optional[str] = ..., keep: _Optional[bool] = ..., at: _Optional[float] = ...) -> None: ...

class LeaseSessionRequest(_message.Message):
    __slots__ = ("take", "release", "batch", "stop_waiting")
    TAKE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STOP_WAITING_FIELD_NUMBER: _ClassVar[int]
    take: LeaseRequest
    release: ReleaseRequest
    batch: LeaseSessionBatch
    stop_waiting: StopWaiting
    def __init__(self, take: _Optional[_Union[LeaseRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., batch: _Optional[_Union[LeaseSessionBatch, _Mapping]] = ..., stop_waiting: _Optional[_Union[StopWaiting, _Mapping]] = ...) -> None: ...

class StopWaiting(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaseSessionBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[LeaseSessionRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[LeaseSessionRequest, _Mapping]]] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLeasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaseRecord(_message.Message):
    __slots__ = ("lease_id", "holder", "granted", "released", "ended")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    holder: str
    granted: float
    released: float
    ended: str
    def __init__(self, lease_id: _Optional[str] = ..., holder: _Optional[str] = ..., granted: _Optional[float] = ..., released: _Optional[float] = ..., ended: _Optional[str] = ...) -> None: ...

class GetLeasesResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseRecord]
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseRecord, _Mapping]]] = ...) -> None: ...
