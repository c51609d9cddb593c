"""Streaming an image to or from a block device that a storage mux has just switched to the exporter.

Such a device shows up some time after the switch, and at first may have no medium or size; both functions
first wait (``timeout`` seconds) until it opens and reports a nonzero size. Writing ends with an fsync,
retried while the device answers EIO, then a pause of ``leeway`` seconds before the mux may switch it back.
"""

from __future__ import annotations

import errno
import os
from logging import Logger
from typing import Literal

from anyio import fail_after, sleep, to_thread
from anyio.abc import AnyByteReceiveStream, AnyByteSendStream
from anyio.streams.file import FileReadStream, FileWriteStream

__all__ = ["read_from_storage_device", "wait_for_storage_device", "write_to_storage_device"]

_PROGRESS_STEP = 50 * 1024 * 1024  # log progress every 50 MiB
_NOT_READY = (errno.ENOMEDIUM, errno.EIO)  # a card reader without a card, a device still spinning up


def _has_content(storage_device: str | os.PathLike[str], mode: Literal["wb", "rb"]) -> bool:
    """True when the device opens in ``mode`` and has a nonzero size."""
    if mode not in ("wb", "rb"):
        raise ValueError(f"invalid mode: {mode}")
    fd = os.open(storage_device, os.O_WRONLY if mode == "wb" else os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END) > 0
    finally:
        os.close(fd)


async def wait_for_storage_device(
    storage_device: str | os.PathLike[str],
    mode: Literal["wb", "rb"],
    timeout: float = 10,
    *,
    logger: Logger | None = None,
) -> str | os.PathLike[str]:
    """Return ``storage_device`` once it opens in ``mode`` with a nonzero size; TimeoutError after ``timeout``."""
    with fail_after(timeout):
        while True:
            try:
                if _has_content(storage_device, mode):
                    if logger:
                        logger.info("storage device %s is ready", storage_device)
                    return storage_device
                if logger:
                    logger.debug("waiting for storage device %s to have a nonzero size", storage_device)
            except FileNotFoundError:
                if logger:
                    logger.debug("waiting for storage device %s to appear", storage_device)
            except OSError as exc:
                if exc.errno not in _NOT_READY:
                    raise
                if logger:
                    logger.debug("waiting for storage device %s to be ready", storage_device)
            await sleep(1)


class _Progress:
    """Logs how many MB went through, about every 50 MiB, so a long transfer shows it is alive."""

    def __init__(self, logger: Logger | None, message: str, storage_device: str | os.PathLike[str]) -> None:
        self.logger, self.message, self.device = logger, message, storage_device
        self.total = self.next_report = 0

    def add(self, size: int) -> None:
        if not self.logger:
            return
        self.total += size
        if self.total > self.next_report:
            self.logger.info(self.message, self.total / (1024 * 1024), self.device)
            self.next_report += _PROGRESS_STEP


async def _fsync(fd: int, storage_device: str | os.PathLike[str], timeout: float, logger: Logger | None) -> None:
    """fsync ``fd``, retrying while the device answers EIO; TimeoutError after ``timeout`` seconds."""
    with fail_after(timeout):
        while True:
            if logger:
                logger.info("fsyncing storage device %s, please wait", storage_device)
            try:
                # in a thread: syncing gigabytes to an SD card takes minutes and must not stall the exporter
                await to_thread.run_sync(os.fsync, fd, abandon_on_cancel=True)
                return
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
            await sleep(1)


async def write_to_storage_device(
    storage_device: str | os.PathLike[str],
    resource: AnyByteReceiveStream,
    timeout: float = 10,
    fsync_timeout: float = 900,
    leeway: float = 6,
    *,
    logger: Logger | None = None,
) -> None:
    """Write every chunk of ``resource`` to the device from its start, fsync it, then wait ``leeway`` seconds."""
    path = await wait_for_storage_device(storage_device, mode="wb", timeout=timeout, logger=logger)
    progress = _Progress(logger, "written %s MB to storage device %s", storage_device)
    with os.fdopen(os.open(path, os.O_WRONLY), "wb") as file:
        async with FileWriteStream(file) as stream:
            async for chunk in resource:
                await stream.send(chunk)
                progress.add(len(chunk))
            await _fsync(file.fileno(), storage_device, fsync_timeout, logger)
        await sleep(leeway)


async def read_from_storage_device(
    storage_device: str | os.PathLike[str],
    resource: AnyByteSendStream,
    timeout: float = 10,
    *,
    logger: Logger | None = None,
) -> None:
    """Send the device's whole content, chunk by chunk, to ``resource``."""
    path = await wait_for_storage_device(storage_device, mode="rb", timeout=timeout, logger=logger)
    progress = _Progress(logger, "read %s MB from storage device %s", storage_device)
    with os.fdopen(os.open(path, os.O_RDONLY), "rb") as file:
        async with FileReadStream(file) as stream:
            async for chunk in stream:
                await resource.send(chunk)
                progress.add(len(chunk))
