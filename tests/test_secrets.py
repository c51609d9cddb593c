"""Credentials are redacted from text that is kept or shown (jumpstarter.common.secrets)."""

from __future__ import annotations

import pytest

from jumpstarter.common.secrets import REDACTED, is_secret_key, redact


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        ("PUT https://b.s3/img?X-Amz-Signature=abc123&X-Amz-Date=1 failed", "https://b.s3/img?", "abc123"),
        ("fetch http://alice:hunter22@host:8080/x", "host:8080/x", "hunter22"),
        ("fetch http://ghp_tokenvalue@github.com/x", "github.com/x", "ghp_tokenvalue"),
        ("https://h/cb#access_token=xyz987", "https://h/cb#", "xyz987"),
        ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: ", "eyJhbGciOi"),
        ('{"Authorization": "Basic dXNlcjpwdw=="}', '"Authorization": "', "dXNlcjpwdw"),
        ("use Bearer abcdef0123 here", "use Bearer ", "abcdef0123"),
        ("token=abc123&x=1 password: hunter2", "token=", "hunter2"),
        ("{'api_key': 'k-555'}", "'api_key': '", "k-555"),
    ],
)
def test_known_secrets_are_redacted(text: str, kept: str, gone: str) -> None:
    redacted = redact(text)
    assert gone not in redacted and REDACTED in redacted and kept in redacted, redacted


def test_named_literals_are_redacted_and_plain_text_is_kept() -> None:
    assert redact("dial 127.0.0.1:7001 with sesame-1234", ["sesame-1234"]) == f"dial 127.0.0.1:7001 with {REDACTED}"
    plain = "power on took 2 s at http://host/path (3 tests)"
    assert redact(plain) == plain


def test_redacting_twice_changes_nothing_more() -> None:
    once = redact("https://u:p@h/x?sig=1 Authorization: Bearer t0ken token=abc")
    assert redact(once) == once
    quoted = "GET of https://h/x?[REDACTED] (redirected to https://h/y?[REDACTED]): 403."  # redacted, then quoted
    assert redact(quoted) == quoted


@pytest.mark.parametrize("name", ["token", "api_key", "X-Amz-Signature", "password", "Authorization", "db_passwd"])
def test_secret_names(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize("name", ["voltage", "path", "command", "args"])
def test_plain_names(name: str) -> None:
    assert not is_secret_key(name)
