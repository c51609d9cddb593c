"""Upstream's ``jumpstarter.common`` helpers as drivers use them: listeners, exceptions, enums, fls, storage, oci."""

# These tests call as upstream's driver packages and their tests do: loose argument types, methods patched.
# mypy: disable-error-code="arg-type, assignment, call-arg, dict-item, func-returns-value"

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from ipaddress import ip_address
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import pytest

import jumpstarter.common as common
from jumpstarter.common import (
    ExporterStatus,
    LogSource,
    Metadata,
    TemporarySocket,
    TemporaryTcpListener,
    TemporaryUnixListener,
    download_fls,
    get_fls_binary,
    get_fls_github_url,
)
from jumpstarter.common import exceptions as jmp_exceptions
from jumpstarter.common import fls as fls_module
from jumpstarter.common.ipaddr import get_ip_address, get_minikube_ip
from jumpstarter.common.storage import read_from_storage_device, wait_for_storage_device, write_to_storage_device
from jumpstarter.v1 import common_pb2


async def echo(stream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send(chunk)


# exceptions -------------------------------------------------------------------------------------------------------


def test_exception_names_match_upstreams():
    assert set(jmp_exceptions.__all__) == {
        "ArgumentError",
        "ConfigurationError",
        "ConnectionError",
        "EnvironmentVariableNotSetError",
        "ExporterOfflineError",
        "ExporterUnreachableError",
        "FileNotFoundError",
        "JumpstarterException",
        "MissingDriverError",
        "ReauthenticationFailed",
    }
    for name in jmp_exceptions.__all__:
        assert issubclass(getattr(jmp_exceptions, name), jmp_exceptions.JumpstarterException)


def test_exception_message_and_cause():
    err = jmp_exceptions.ConfigurationError('Missing "API_HOST" environment variable')
    assert err.message == str(err) == 'Missing "API_HOST" environment variable'
    assert err.args == ('Missing "API_HOST" environment variable',)

    with pytest.raises(jmp_exceptions.ConnectionError) as caught:
        try:
            raise OSError("connection refused")
        except OSError as exc:
            raise jmp_exceptions.ConnectionError("can't reach the controller") from exc
    assert str(caught.value) == "can't reach the controller (Caused by: connection refused)"
    assert caught.value.message == "can't reach the controller"

    with pytest.raises(jmp_exceptions.ArgumentError) as caught:
        try:
            raise KeyError("x")
        except KeyError:
            raise jmp_exceptions.ArgumentError("bad argument") from None
    assert str(caught.value) == "bad argument"


def test_exception_hierarchy_follows_upstream():
    assert issubclass(jmp_exceptions.ExporterOfflineError, jmp_exceptions.ConnectionError)
    assert not issubclass(jmp_exceptions.ConnectionError, ConnectionError)  # upstream's is not the builtin
    missing = jmp_exceptions.FileNotFoundError("no such image")
    assert isinstance(missing, FileNotFoundError)
    assert str(missing) == "no such image"
    with pytest.raises(FileNotFoundError, match="no such image"):
        raise missing


def test_exception_config_print_and_pickle(capsys):
    err = jmp_exceptions.ReauthenticationFailed("token expired")
    assert err.get_config() is None
    config = object()
    err.set_config(config)
    assert err.get_config() is config

    err.print()
    assert capsys.readouterr().err == "\033[91mtoken expired\033[0m\n"

    driver = jmp_exceptions.MissingDriverError("no client", "jumpstarter_driver_x.client.XClient")
    assert driver.class_path == "jumpstarter_driver_x.client.XClient"
    copy = pickle.loads(pickle.dumps(driver))
    assert (type(copy), copy.message, copy.class_path) == (type(driver), "no client", driver.class_path)


# enums ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enum", "proto", "prefix"),
    [(ExporterStatus, "ExporterStatus", "EXPORTER_STATUS_"), (LogSource, "LogSource", "LOG_SOURCE_")],
)
def test_enums_are_the_protocols(enum, proto, prefix):
    wire = dict(getattr(common_pb2, proto).items())  # every constant the .proto defines
    assert {prefix + member.name: member.value for member in enum} == wire
    for member in enum:
        assert member == getattr(common_pb2, prefix + member.name)
        assert enum.from_proto(member.to_proto()) is member
        assert str(member) == member.name
    with pytest.raises(ValueError):
        enum.from_proto(max(wire.values()) + 1)


def test_enum_values():
    assert ExporterStatus.LEASE_READY == common_pb2.EXPORTER_STATUS_LEASE_READY == 4
    assert LogSource.SYSTEM.to_proto() == common_pb2.LOG_SOURCE_SYSTEM
    assert f"{ExporterStatus.AVAILABLE}" == "AVAILABLE"


# jumpstarter.common itself ----------------------------------------------------------------------------------------


def test_package_exports_upstreams_names():
    for name in common.__all__:
        assert getattr(common, name) is not None
    assert common.HOOK_WARNING_PREFIX == "[HOOK_WARNING] "
    assert set(common.__all__) <= set(dir(common))
    with pytest.raises(AttributeError):
        common.NoSuchThing  # noqa: B018


def test_importing_the_package_is_cheap_and_offline():
    # Nothing heavy is loaded and nothing is downloaded by importing the package or looking up fls helpers.
    script = textwrap.dedent(
        """
        import socket, sys, urllib.request
        def refuse(*args, **kwargs):
            raise AssertionError("network used at import time")
        urllib.request.urlopen = socket.create_connection = refuse
        import jumpstarter.common
        loaded = {m.split(".")[0] for m in sys.modules}
        assert not loaded & {"pydantic", "anyio", "google", "grpc"}, loaded & {"pydantic", "anyio", "google", "grpc"}
        from jumpstarter.common import get_fls_binary, download_fls, get_fls_github_url, TemporaryTcpListener
        import jumpstarter.common.fls
        assert "pydantic" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_metadata():
    meta = Metadata(labels={"jumpstarter.dev/name": "board-1", "lab": "a"})
    assert meta.name == "board-1"
    assert isinstance(meta.uuid, UUID)
    assert Metadata().uuid != Metadata().uuid
    assert Metadata().name == "unknown"
    given = uuid4()
    assert Metadata(uuid=str(given)).uuid == given
    assert Metadata(uuid=given).uuid is given
    with pytest.raises(TypeError):
        Metadata(given)  # keyword-only, as upstream's
    with pytest.raises(ValueError):
        Metadata(uuid="not-a-uuid")
    with pytest.raises(ValueError):
        Metadata(labels={"n": 1})


# tempfile ---------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_tcp_listener_echoes():
    async with TemporaryTcpListener(echo) as (host, port):
        assert host == "127.0.0.1" and port > 0
        for _ in range(2):  # each connection gets its own handler
            async with await anyio.connect_tcp(host, port) as conn:
                await conn.send(b"ping")
                assert await conn.receive() == b"ping"
    with pytest.raises(OSError):
        await anyio.connect_tcp(host, port)  # closed on exit


@pytest.mark.anyio
async def test_unix_listener_echoes_on_a_private_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    async with TemporaryUnixListener(echo) as path:
        folder = Path(path).parent
        assert folder.parent == tmp_path and folder.name.startswith("jumpstarter-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        async with await anyio.connect_unix(path) as conn:
            await conn.send(b"hello")
            assert await conn.receive() == b"hello"
    assert not folder.exists()


@pytest.mark.anyio
async def test_unix_listener_on_a_given_path(tmp_path):
    path = tmp_path / "given.sock"
    async with TemporaryUnixListener(echo, path=path) as where:
        assert where == path
        async with await anyio.connect_unix(where) as conn:
            await conn.send(b"x")
            assert await conn.receive() == b"x"


@pytest.mark.anyio
async def test_listener_cancels_handlers_and_passes_errors_through():
    started, cancelled = anyio.Event(), anyio.Event()

    async def waits_forever(stream) -> None:
        async with stream:
            started.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.set()
                raise

    with pytest.RaisesGroup(pytest.RaisesExc(KeyError, match="from the body")):  # wrapped, as upstream's is
        async with TemporaryTcpListener(waits_forever) as (host, port):
            conn = await anyio.connect_tcp(host, port)
            await started.wait()
            raise KeyError("from the body")
    assert cancelled.is_set()
    await conn.aclose()


def test_temporary_socket_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with TemporarySocket() as path:
        assert path.name == "socket" and path.parent.parent == tmp_path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert not path.exists()
    assert not path.parent.exists()

    for unset in ("", "relative/dir"):  # unset, or not absolute: the temp dir
        monkeypatch.setenv("XDG_RUNTIME_DIR", unset)
        with TemporarySocket() as path:
            assert path.parent.parent == Path(tempfile.gettempdir())


# fls --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "binary"),
    [
        ("aarch64", "fls-aarch64-linux-musl"),
        ("ARM64", "fls-aarch64-linux-musl"),
        ("x86_64", "fls-x86_64-linux"),
        ("amd64", "fls-x86_64-linux"),
        ("riscv64", "fls-aarch64-linux-musl"),
    ],
)
def test_fls_github_url(arch, binary, monkeypatch):
    expected = f"https://github.com/jumpstarter-dev/fls/releases/download/0.2.0/{binary}"
    assert get_fls_github_url("0.2.0", arch=arch) == expected
    monkeypatch.setattr("platform.machine", lambda: arch)
    assert get_fls_github_url("0.2.0") == expected


def test_fls_binary_selection(monkeypatch):
    downloads: list[str] = []
    monkeypatch.setattr(fls_module, "download_fls", lambda url: downloads.append(url) or f"/tmp/got-{len(downloads)}")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")

    assert get_fls_binary() == "fls"  # the one on PATH
    with pytest.raises(RuntimeError, match="Custom FLS binary URLs are disabled"):
        get_fls_binary(fls_binary_url="https://example.com/fls")
    assert downloads == []

    assert get_fls_binary(fls_version="0.1.9") == "/tmp/got-1"
    assert downloads == ["https://github.com/jumpstarter-dev/fls/releases/download/0.1.9/fls-x86_64-linux"]
    url = "https://example.com/fls"
    assert get_fls_binary(fls_version="0.1.9", fls_binary_url=url, allow_custom_binaries=True) == "/tmp/got-2"
    assert downloads[-1] == url  # a custom URL wins over a version


def test_download_fls_from_a_file_url(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    source = tmp_path / "fls-src"
    source.write_bytes(b"\x7fELF" + bytes(range(256)) * 100)

    path = download_fls(source.as_uri())
    assert Path(path).parent == tmp_path / "tmp" and Path(path).name.startswith("fls-")
    assert Path(path).read_bytes() == source.read_bytes()
    assert os.access(path, os.X_OK)
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [Path(path).name]  # no .part left

    with pytest.raises(RuntimeError, match="Failed to download FLS from"):
        download_fls((tmp_path / "missing").as_uri())
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [Path(path).name]  # cleaned up


# storage ----------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_storage_write_then_read(tmp_path):
    device = tmp_path / "sdcard.img"
    device.write_bytes(b"\0" * 4096)  # a device must have a size to count as ready
    data = [os.urandom(1000), os.urandom(70000), b"tail"]

    send, receive = anyio.create_memory_object_stream[bytes](len(data))
    for chunk in data:
        send.send_nowait(chunk)
    send.close()
    with receive:
        await write_to_storage_device(device, receive, leeway=0, logger=logging.getLogger("test"))
    assert device.read_bytes() == b"".join(data)  # written from the start; a file grows past its size

    send, receive = anyio.create_memory_object_stream[bytes](100)
    with receive:
        async with send:
            await read_from_storage_device(str(device), send)
        assert b"".join([chunk async for chunk in receive]) == b"".join(data)


@pytest.mark.anyio
async def test_storage_waits_for_the_device(tmp_path):
    device = tmp_path / "late.img"
    with pytest.raises(TimeoutError):
        await wait_for_storage_device(device, "rb", timeout=0.2)
    device.touch()
    with pytest.raises(TimeoutError):  # empty: no medium yet
        await wait_for_storage_device(device, "wb", timeout=0.2)
    device.write_bytes(b"x")
    assert await wait_for_storage_device(device, "rb", timeout=1) == device
    with pytest.raises(ValueError, match="invalid mode"):
        await wait_for_storage_device(device, "ab", timeout=1)


# ipaddr -----------------------------------------------------------------------------------------------------------


def test_get_ip_address(monkeypatch, caplog):
    ip_address(get_ip_address())  # some valid address on this machine

    monkeypatch.setattr(socket, "gethostbyname", lambda name: "10.1.2.3")
    assert get_ip_address() == "10.1.2.3"

    def no_socket(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")  # loopback: ask the route instead
    monkeypatch.setattr(socket, "socket", no_socket)
    logger = logging.getLogger("test.ipaddr")
    with caplog.at_level(logging.WARNING, logger="test.ipaddr"):
        assert get_ip_address(logger=logger) == "0.0.0.0"
    assert "falling back to 0.0.0.0" in caplog.text


@pytest.mark.anyio
async def test_get_minikube_ip(tmp_path):
    fake = tmp_path / "minikube"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = ip ] || exit 2\n[ "$2" = -p ] && { echo "$3" >&2; exit 1; }\necho 192.168.49.2\n'
    )
    fake.chmod(0o755)
    assert await get_minikube_ip(minikube=str(fake)) == "192.168.49.2"
    with pytest.raises(RuntimeError, match="no-such-profile"):
        await get_minikube_ip("no-such-profile", minikube=str(fake))


# oci --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def oci(tmp_path, monkeypatch):
    """jumpstarter.common.oci with a home, runtime dir and environment of its own."""
    module = pytest.importorskip("jumpstarter.common.oci")
    for name in ("OCI_USERNAME", "OCI_PASSWORD", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return module


def auth_file(path: Path, auths: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_oci_credentials_model(oci):
    from pydantic import SecretStr, ValidationError

    creds = oci.OciCredentials(username=" user ", password=SecretStr(" s3cr3t "))
    assert (creds.username, creds.plain_password, creds.is_authenticated) == ("user", "s3cr3t", True)
    assert "s3cr3t" not in repr(creds)
    assert not oci.OciCredentials(username="  ", password="").is_authenticated
    assert oci.OciCredentials().plain_password is None
    with pytest.raises(ValidationError, match="both username and password"):
        oci.OciCredentials(username="user")
    with pytest.raises(ValidationError):
        creds.username = "other"  # frozen


def test_oci_precedence(oci, tmp_path, monkeypatch):
    url = "oci://quay.io/org/image:tag"
    assert not oci.resolve_oci_credentials(url).is_authenticated  # nothing anywhere

    # podman's default under $XDG_RUNTIME_DIR
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    auth_file(tmp_path / "run" / "containers" / "auth.json", {"quay.io": {"auth": b64("podman", "p:w")}})
    assert oci.resolve_oci_credentials(url).plain_password == "p:w"

    # $REGISTRY_AUTH_FILE comes first
    monkeypatch.setenv(
        "REGISTRY_AUTH_FILE", str(auth_file(tmp_path / "explicit.json", {"quay.io": {"auth": b64("x", "y")}}))
    )
    assert oci.resolve_oci_credentials(url).username == "x"

    # then the environment, but only both variables together
    monkeypatch.setenv("OCI_USERNAME", "envuser")
    assert oci.resolve_oci_credentials(url).username == "x"
    monkeypatch.setenv("OCI_PASSWORD", "envpass")
    assert oci.resolve_oci_credentials(url).username == "envuser"

    # then explicit arguments; blank ones fall through, a lone one is an error
    assert oci.resolve_oci_credentials(url, "me", "secret").username == "me"
    assert oci.resolve_oci_credentials(url, "", " ").username == "envuser"
    with pytest.raises(ValueError, match="both username and password"):
        oci.resolve_oci_credentials(url, username="me")


def test_oci_auth_files(oci, tmp_path, monkeypatch):
    home = tmp_path / "home"
    auth_file(home / ".docker" / "config.json", {"https://index.docker.io/v1/": {"auth": b64("hub", "hubpass")}})
    assert oci.read_auth_file_credentials("docker.io/library/ubuntu:22.04").username == "hub"
    assert oci.read_auth_file_credentials("oci://registry-1.docker.io/library/ubuntu").username == "hub"
    assert not oci.read_auth_file_credentials("oci://ghcr.io/org/repo:v1").is_authenticated

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    auth_file(tmp_path / "docker" / "config.json", {"registry.local:5000": {"username": "u", "password": "p"}})
    assert oci.read_auth_file_credentials("oci://registry.local:5000/repo@sha256:abcd").username == "u"

    # a broken file or entry is skipped
    (home / ".config" / "containers").mkdir(parents=True)
    (home / ".config" / "containers" / "auth.json").write_text("{not json")
    auth_file(tmp_path / "bad.json", {"ghcr.io": {"auth": "!!!", "username": "only-user"}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "bad.json"))
    assert not oci.read_auth_file_credentials("ghcr.io/org/repo").is_authenticated
    assert oci.read_auth_file_credentials("docker.io/library/ubuntu").username == "hub"


def test_oci_resolve_uses_the_patchable_reader(oci, monkeypatch):
    # driver tests patch jumpstarter.common.oci.read_auth_file_credentials and expect resolve to use theirs
    marker = oci.OciCredentials(username="patched", password="yes")
    monkeypatch.setattr(oci, "read_auth_file_credentials", lambda url: marker)
    assert oci.resolve_oci_credentials("oci://quay.io/a/b") is marker


@pytest.mark.parametrize(
    ("reference", "registry"),
    [
        ("oci://quay.io/org/image:latest", "quay.io"),
        ("registry.example.com:5000/repo:tag", "registry.example.com:5000"),
        ("oci://localhost/repo", "localhost"),
        ("oci://myhost:5000/repo", "myhost:5000"),
        ("oci://quay.io/org/repo@sha256:abc123", "quay.io"),
    ],
)
def test_oci_registry_of_a_reference(oci, reference, registry):
    assert oci.parse_oci_registry(reference) == registry


# resources --------------------------------------------------------------------------------------------------------


def test_resources_are_pydantic_models():
    resources = pytest.importorskip("jumpstarter.common.resources")
    from pydantic import TypeAdapter, ValidationError

    presigned = resources.PresignedRequestResource(headers={"a": "b"}, url="https://s3/x", method="PUT")
    assert presigned.model_dump(mode="json") == {
        "kind": "presigned_request",
        "headers": {"a": "b"},
        "url": "https://s3/x",
        "method": "PUT",
    }
    with pytest.raises(ValidationError):
        resources.PresignedRequestResource(headers={}, url="u", method="POST")

    # the handle our exporter hands a driver for an upload is a ClientStreamResource
    uuid = uuid4()
    handle = {"kind": "client_stream", "uuid": str(uuid), "x_jmp_content_encoding": None}
    parsed = TypeAdapter(resources.Resource).validate_python(handle)
    assert isinstance(parsed, resources.ClientStreamResource) and parsed.uuid == uuid

    meta = resources.ResourceMetadata(resource=presigned.model_dump_json(), x_jmp_accept_encoding="gzip")
    assert meta.resource == presigned
    assert resources.ResourceMetadata.model_validate({"resource": json.dumps(handle)}).resource == parsed
    with pytest.raises(ValidationError):
        resources.ResourceMetadata(resource=json.dumps({"kind": "other"}))
