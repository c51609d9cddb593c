"""Resources the driver fetches itself: a client hands over an HTTP(S) URL (upstream's "presigned request")
instead of streaming the bytes, so a large image goes from its server straight to the exporter.

GET streams the body to the driver; PUT streams what the driver sends to the URL. Redirects are followed by
hand, so that a signed URL's percent-encoding reaches the next server unchanged, and credentials are not
carried to another origin. Errors name the URL with its credentials (the query, where signatures live, and a
``user:password@``) redacted, and every text of aiohttp's or the server's they quote is scrubbed of the credentials
of each URL the request went to (jumpstarter.common.secrets).
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeGuard
from urllib.parse import unquote, urlsplit

import anyio
from anyio.abc import ObjectStream
from anyio.streams.stapled import StapledObjectStream

from jumpstarter.common.secrets import redact, redact_url
from jumpstarter.extras import missing_extra

try:
    import aiohttp
    import yarl
except ModuleNotFoundError as exc:
    raise missing_extra(exc, __name__) from None

MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Headers that carry credentials: dropped when a redirect leads to another scheme, host or port.
SECRET_HEADERS = ("authorization", "cookie", "proxy-authorization", "x-amz-", "x-ms-", "x-goog-")
CHUNK = 64 * 1024


def _same_origin(a: str, b: yarl.URL) -> bool:
    first = yarl.URL(a, encoded=True)
    return (first.scheme, first.host, first.port) == (b.scheme, b.host, b.port)


@asynccontextmanager
async def presigned(url: str, method: str, headers: dict[str, str], timeout: float) -> AsyncIterator[ObjectStream]:
    """The driver's side of a presigned request: receive the body (GET), or send the upload (PUT)."""
    visited = [url]  # and where redirects led: an error may quote any of them
    try:
        _ = yarl.URL(url, encoded=True).port  # (yarl checks the port only when asked for it)
    except ValueError as exc:
        raise ValueError(
            f"presigned HTTP {method} of {redact_url(url)}: not a valid URL: {_scrubbed(str(exc), visited)}"
        ) from None
    try:
        async with _request(url, method, headers, aiohttp.ClientTimeout(total=timeout), visited) as stream:
            yield stream
    except BaseExceptionGroup as group:  # the PUT's task group: its one failure is the one to name
        # (the driver's send into an upload that failed fails too, as a consequence: not a failure of its own)
        causes = [
            e for e in group.exceptions if not isinstance(e, (anyio.BrokenResourceError, anyio.ClosedResourceError))
        ]
        failures = causes or list(group.exceptions)
        if len(failures) != 1 or not isinstance(failures[0], Exception):
            raise
        _raise_explained(failures[0], visited, method, timeout)
    except Exception as exc:
        _raise_explained(exc, visited, method, timeout)


def _raise_explained(exc: Exception, visited: list[str], method: str, timeout: float) -> NoReturn:
    explained = _explained(exc, visited, method, timeout)
    if explained is exc:
        raise exc
    # Not chained: aiohttp's error quotes the URL, signature and all, and the exporter logs a failed call's chain.
    raise explained from None


def _explained(exc: Exception, visited: list[str], method: str, timeout: float) -> Exception:
    """An HTTP failure as an error naming the request (credentials redacted); other errors as they are."""
    where = f"presigned HTTP {method} of {redact_url(visited[0])}"
    if len(visited) > 1:
        where += f" (redirected to {redact_url(visited[-1])})"
    if isinstance(exc, aiohttp.ClientResponseError):  # a reason phrase may quote the request line, query and all
        return RuntimeError(f"{where} failed: status={exc.status}, reason={_scrubbed(repr(exc.message), visited)}")
    if method == "PUT" and _closed_under_upload(exc):
        # A server may answer (403 for a bad signature, 413 for too big) and close before reading the body: the
        # write then fails, and its answer, still unread, is lost with the connection.
        return RuntimeError(
            f"{where} failed: the server closed the connection while the upload was sent"
            f" ({os.strerror(exc.errno) if exc.errno else 'connection reset'}): it refused the upload without reading"
            " it (an expired or wrong signature, or too big?), or went away"
        )
    if isinstance(exc, (aiohttp.ClientError, anyio.BrokenResourceError)):
        return RuntimeError(f"{where} failed: {type(exc).__name__}: {_scrubbed(str(exc), visited)}")
    if isinstance(exc, TimeoutError):
        return TimeoutError(f"{where} timed out after {timeout:g} s")
    return exc


def _closed_under_upload(exc: Exception) -> TypeGuard[OSError]:
    """Whether writing a request body failed because the server closed the connection."""
    if not isinstance(exc, aiohttp.ClientError) or not isinstance(exc, OSError):
        return False
    return isinstance(exc, ConnectionResetError) or exc.errno in (errno.EPIPE, errno.ECONNRESET)


def _scrubbed(text: str, urls: list[str]) -> str:
    """``text`` with every credential redacted: those of ``urls`` (query, fragment, user and password) wherever they
    appear, even without their URL around them (a reason phrase quoting the request line), and any URL's."""
    secrets: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        for secret in (parts.query, parts.fragment, userinfo, *userinfo.split(":", 1)):
            secrets += (secret, unquote(secret))
    return redact(text, secrets)


@asynccontextmanager
async def _request(
    url: str, method: str, headers: dict[str, str], timeout: Any, visited: list[str]
) -> AsyncIterator[ObjectStream]:
    if method == "GET":
        async with _get(url, headers, timeout, visited) as stream:
            yield stream
    elif method == "PUT":
        sender, receiver = anyio.create_memory_object_stream[bytes](32)

        async def body() -> AsyncIterator[bytes]:
            async with receiver:
                async for chunk in receiver:
                    yield chunk

        async with aiohttp.ClientSession(timeout=timeout) as session, anyio.create_task_group() as tg:

            async def put() -> None:
                try:
                    async with session.put(yarl.URL(url, encoded=True), headers=headers, data=body()) as response:
                        response.raise_for_status()
                except BaseException:
                    receiver.close()  # the driver's next send fails instead of waiting for a reader
                    raise

            tg.start_soon(put)
            async with sender:  # its end ends the body; leaving the task group waits for the response
                yield StapledObjectStream(sender, _Nothing())
    else:
        raise ValueError(f"presigned request method {method!r} is neither GET nor PUT")


@asynccontextmanager
async def _get(url: str, headers: dict[str, str], timeout: Any, visited: list[str]) -> AsyncIterator[ObjectStream]:
    """GET ``url``, following redirects by hand; ``visited`` gets each URL a redirect leads to."""
    current, current_headers = url, dict(headers)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(MAX_REDIRECTS + 1):
            target = yarl.URL(current, encoded=True)  # as given: a signature covers the encoded form
            async with session.get(target, headers=current_headers, allow_redirects=False) as response:
                if response.status in REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise RuntimeError(
                            f"presigned HTTP GET of {redact_url(current)}: redirect missing Location header"
                        )
                    following = target.join(yarl.URL(location, encoded=True))
                    if not _same_origin(current, following):
                        current_headers = {
                            k: v for k, v in current_headers.items() if not k.lower().startswith(SECRET_HEADERS)
                        }
                    current = str(following)
                    visited.append(current)
                    continue
                response.raise_for_status()
                yield StapledObjectStream(_Nothing(), _Body(response.content))
                return
    raise RuntimeError(f"Too many redirects (more than {MAX_REDIRECTS}) for presigned HTTP GET of {redact_url(url)}")


class _Body(anyio.abc.ObjectReceiveStream[bytes]):
    """An HTTP response body as an anyio object stream of chunks."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self.content = content

    async def receive(self) -> bytes:
        chunk = await self.content.read(CHUNK)
        if not chunk:
            raise anyio.EndOfStream
        return chunk

    async def aclose(self) -> None:
        pass


class _Nothing(anyio.abc.ObjectStream[bytes]):
    """The direction a presigned request doesn't have (a GET takes nothing; a PUT gives nothing back)."""

    async def send(self, item: bytes) -> None:
        raise anyio.BrokenResourceError("a presigned GET sends nothing to its URL")

    async def receive(self) -> bytes:
        raise anyio.EndOfStream

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
