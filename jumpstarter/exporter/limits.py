"""What clients may make an exporter hold: the size of one request, the bytes of uploads that wait for their
drivers, and the uploads open at once.

``jumpstarter run`` takes each as an option; these environment variables give the defaults (and the limits of
exporters the pytest plugin starts, and of in-process ``serve()``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from jumpstarter.common.wire import UPLOAD_CHUNK_MAX

MIB = 1024 * 1024

MAX_MESSAGE_ENV = "JUMPSTARTER_MAX_MESSAGE_SIZE"  # MiB
UPLOAD_MEMORY_ENV = "JUMPSTARTER_UPLOAD_MEMORY"  # MiB
MAX_UPLOADS_ENV = "JUMPSTARTER_MAX_UPLOADS"
# gRPC takes a message size as a 32-bit int: 2048 MiB is one byte too many.
MOST_MESSAGE_MIB = 2047


@dataclass(frozen=True)
class Limits:
    """An exporter's limits, in bytes and counts."""

    # One request (a call's arguments, a frame of a stream): gRPC refuses a bigger one before it is read. A
    # request of many small values costs some 20 times its size in memory once decoded.
    max_message: int = 16 * MIB
    # The bytes of one upload held while its driver hasn't read them (at least one chunk).
    upload_buffer: int = 1 * MIB
    # One message of an upload: a bigger one is refused (our client sends no bigger).
    upload_chunk: int = UPLOAD_CHUNK_MAX
    # The same for all uploads together; a driver that waits to read still gets its upload's next chunk.
    upload_memory: int = 64 * MIB
    # Uploads open at once.
    max_uploads: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Limits:
        """The defaults, with those the environment sets; ValueError naming a variable that isn't a number."""
        return cls(
            max_message=_number(environ, MAX_MESSAGE_ENV, cls.max_message // MIB, most=MOST_MESSAGE_MIB) * MIB,
            upload_memory=_number(environ, UPLOAD_MEMORY_ENV, cls.upload_memory // MIB) * MIB,
            max_uploads=_number(environ, MAX_UPLOADS_ENV, cls.max_uploads),
        )


def _number(environ: Mapping[str, str], name: str, default: int, most: int | None = None) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={text!r}: give a whole number, 1 or more")
    if most is not None and value > most:
        raise ValueError(too_big(f"{name}={text}", most))
    return value


def too_big(given: str, most: int) -> str:
    """The message for a message size beyond gRPC's."""
    return f"{given}: at most {most} (MiB): gRPC takes no bigger message"
