"""Transfer progress of a byte stream: a live bar on a terminal, or log lines where output is a log."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from anyio import EndOfStream, TypedAttributeSet, typed_attribute
from anyio.abc import AnyByteStream, ObjectStream

from jumpstarter.extras import missing_extra

try:
    from rich.filesize import decimal
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
except ModuleNotFoundError as exc:
    raise missing_extra(exc, __name__) from None

logger = logging.getLogger(__name__)

LOG_INTERVAL = 2.0  # seconds between two progress lines when logging


class ProgressAttribute(TypedAttributeSet):
    """What a stream can tell of its size in bytes, so that progress shows a percentage and time left."""

    total: float = typed_attribute()


@dataclass(kw_only=True)
class ProgressStream(ObjectStream[bytes]):
    """``stream`` unchanged, counting the bytes each way.

    The count shows as a bar, unless ``logging`` (an exporter, whose output goes to a log) or a dumb terminal;
    with ``logging`` it is logged every few seconds and when a direction ends. The size comes from ``stream``'s
    ``ProgressAttribute.total`` when it has one.
    """

    stream: AnyByteStream
    logging: bool = False

    _progress: Progress = field(init=False, repr=False)
    _tasks: dict[str, TaskID] = field(init=False, default_factory=dict, repr=False)
    _logged_at: float = field(init=False, default_factory=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TransferSpeedColumn(),
            DownloadColumn(),
            TextColumn("Elapsed:"),
            TimeElapsedColumn(),
            TextColumn("Remaining:"),
            TimeRemainingColumn(),
            disable=self.logging or os.environ.get("TERM") == "dumb",
        )

    async def receive(self) -> bytes:
        self._task("received")
        try:
            item = await self.stream.receive()
        except EndOfStream:
            self._end("received")
            raise
        self._advance("received", len(item))
        return item

    async def send(self, item: bytes) -> None:
        self._task("sent")
        await self.stream.send(item)
        self._advance("sent", len(item))

    async def send_eof(self) -> None:
        await self.stream.send_eof()
        self._end("sent")

    async def aclose(self) -> None:
        self._progress.stop()
        await self.stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.stream.extra_attributes

    def _task(self, direction: str) -> TaskID:
        if direction not in self._tasks:
            self._progress.start()
            total = self.stream.extra(ProgressAttribute.total, None)
            self._tasks[direction] = self._progress.add_task(direction, total=total)
        return self._tasks[direction]

    def _advance(self, direction: str, count: int) -> None:
        self._progress.advance(self._tasks[direction], count)
        if self.logging and time.monotonic() - self._logged_at >= LOG_INTERVAL:
            self._log(direction)

    def _end(self, direction: str) -> None:
        if direction in self._tasks:
            self._progress.stop()
            if self.logging:
                self._log(direction)

    def _log(self, direction: str) -> None:
        self._logged_at = time.monotonic()
        task = next(task for task in self._progress.tasks if task.id == self._tasks[direction])
        line = f"{direction} {decimal(int(task.completed))}"
        if task.total:
            line += f" of {decimal(int(task.total))} ({task.percentage:.0f}%)"
        if task.speed:
            line += f", {decimal(int(task.speed))}/s"
        logger.info("%s", line)
