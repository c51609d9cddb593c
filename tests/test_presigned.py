"""Presigned HTTP resources: the driver fetches from, or uploads to, a URL the client hands it."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export
from jumpstarter.errors import DriverError

PUT: list[bytes] = []


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/elsewhere"):  # a redirect to a URL aiohttp won't fetch, signed
            self.send_response(302)
            self.send_header("Location", "ftp://files.example/image?sig=redirect-secret")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/quoting"):  # a reason phrase that quotes the request line, query and all
            self.send_response(403, f"Forbidden: {self.requestline}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/denied"):
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"image" * 1000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:  # noqa: N802
        if self.path.startswith("/reset"):  # gone under the upload: the connection reset, no answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        if self.path.startswith("/unread"):  # refused at once: the connection closes under the upload
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else _read_chunked(self.rfile)
        if self.path.startswith("/denied"):  # refused once read
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        PUT.append(data)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _read_chunked(stream) -> bytes:
    data = b""
    while (size := int(stream.readline().strip() or b"0", 16)) > 0:
        data += stream.read(size)
        stream.readline()
    stream.readline()
    return data


@pytest.fixture
def server() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@dataclass(kw_only=True)
class Storage(Driver):
    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    async def size(self, source) -> int:
        total = 0
        async with self.resource(source) as data:
            async for chunk in data:
                total += len(chunk)
        return total

    @export
    async def dump(self, target, chunks: int = 3) -> None:
        async with self.resource(target) as data:
            for _ in range(chunks):
                await data.send(b"dump" * 100)


def _handle(url: str, method: str) -> dict:
    return {"kind": "presigned_request", "url": url, "method": method, "headers": {}}


def test_get_and_put_reach_the_url(server: str) -> None:
    PUT.clear()
    with serve(Storage()) as client:
        assert client.call("size", _handle(f"{server}/image", "GET")) == 5000
        client.call("dump", _handle(f"{server}/upload?sig=1", "PUT"))
    assert PUT == [b"dump" * 300]


def test_a_refused_put_is_named_with_its_status(server: str, caplog: pytest.LogCaptureFixture) -> None:
    with serve(Storage()) as client, pytest.raises(DriverError) as failed:
        client.call("dump", _handle(f"{server}/denied?sig=secret", "PUT"))
    message = str(failed.value)
    assert "presigned HTTP PUT of" in message and "status=403" in message, message
    assert "secret" not in message
    assert "dump raised RuntimeError" in caplog.text and "secret" not in caplog.text  # nor in the exporter's log


def test_an_upload_refused_unread_says_so(server: str) -> None:
    """The server answers before reading the body and closes: either its answer is read in time, or the write
    fails first and the answer is lost with the connection. Either way the message says what happened."""
    with serve(Storage()) as client, pytest.raises(DriverError) as failed:
        client.call("dump", _handle(f"{server}/unread?sig=secret", "PUT"))
    message = str(failed.value)
    assert "presigned HTTP PUT of" in message and "secret" not in message, message
    assert "status=403" in message or "the server closed the connection while the upload was sent" in message, message


def test_an_upload_cut_off_says_the_connection_closed_and_keeps_the_signature_secret(server: str) -> None:
    with serve(Storage()) as client, pytest.raises(DriverError) as failed:
        client.call("dump", _handle(f"{server}/reset?sig=secret", "PUT"), 10_000)
    message = str(failed.value)
    assert "presigned HTTP PUT of" in message and "secret" not in message, message
    assert "the server closed the connection while the upload was sent" in message, message


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://files.example/image?sig=secret", "NonHttpUrlClientError"),  # aiohttp's message quotes the URL
        ("http://files.example:99999/image?sig=secret", "not a valid URL: Port out of range"),
    ],
)
def test_a_bad_url_is_named_with_its_signature_kept_secret(url: str, why: str) -> None:
    with serve(Storage()) as client:
        for method, call in (("GET", "size"), ("PUT", "dump")):
            with pytest.raises(DriverError) as failed:
                client.call(call, _handle(url, method))
            message = str(failed.value)
            assert f"presigned HTTP {method} of {url.replace('sig=secret', '[REDACTED]')}" in message, message
            assert why in message and "secret" not in message, message


def _credentials_kept_secret(client, call: tuple, caplog: pytest.LogCaptureFixture, *secrets: str) -> str:
    """The message of the error ``client.call(*call)`` raises, which must not hold ``secrets``, nor the log."""
    caplog.clear()
    with pytest.raises(DriverError) as failed:
        client.call(*call)
    message = str(failed.value)
    for secret in secrets:
        assert secret not in message, message
        assert secret not in caplog.text, caplog.text  # nor in the exporter's log
    assert "[REDACTED]" in message, message
    return message


def test_every_credential_of_a_presigned_request_is_kept_out_of_errors_and_logs(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serve(Storage()) as client:
        malformed = {"kind": "presigned_request", "url": "https://h/p?sig=handle-secret", "method": 5}
        message = _credentials_kept_secret(client, ("size", malformed), caplog, "handle-secret")  # quoted in its error
        assert "needs a 'url' and a 'method'" in message, message
        message = _credentials_kept_secret(  # a redirect to a non-HTTP URL, which aiohttp's error quotes
            client,
            ("size", _handle(f"{server}/elsewhere?sig=first-secret", "GET")),
            caplog,
            "first-secret",
            "redirect-secret",
        )
        assert "(redirected to ftp://files.example/image?[REDACTED]) failed" in message, message
        userinfo = server.replace("http://", "http://alice:hunter22@")
        for method, call in (("GET", "size"), ("PUT", "dump")):  # user:password@
            message = _credentials_kept_secret(
                client, (call, _handle(f"{userinfo}/denied?sig=secret", method)), caplog, "hunter22", "alice"
            )
            assert "status=403" in message, message
        message = _credentials_kept_secret(  # the server's reason phrase quotes the request line
            client, ("size", _handle(f"{server}/quoting?sig=quoted-secret", "GET")), caplog, "quoted-secret"
        )
        assert "status=403" in message and "Forbidden: GET /quoting?" in message, message


@dataclass(kw_only=True)
class Leaky(Driver):
    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    def fetch(self) -> None:
        try:
            raise OSError("GET https://bob:pa55word@h/img?X-Amz-Signature=cause-secret failed")
        except OSError as exc:
            raise RuntimeError("fetching with token=message-secret failed") from exc

    @export
    def check(self) -> None:
        raise ValueError("password: value-secret is wrong")


def test_the_exporter_redacts_credentials_from_any_drivers_error_and_its_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with serve(Leaky()) as client:
        _credentials_kept_secret(client, ("fetch",), caplog, "message-secret", "cause-secret", "pa55word")
        assert "fetch raised RuntimeError" in caplog.text and "Traceback" in caplog.text, caplog.text
        _credentials_kept_secret(client, ("check",), caplog, "value-secret")
