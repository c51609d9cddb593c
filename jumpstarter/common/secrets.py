"""Credentials out of text that is kept or shown: error messages, log lines, recordings meant for git.

``redact`` finds what is known to carry a secret wherever it appears in a text, and replaces the secret part
with ``[REDACTED]``, keeping enough around it to say what was there:

- a URL's query string (where presigned URLs keep their signature): ``https://h/p?[REDACTED]``;
- a URL's password (``user:password@host``), and its user too: ``https://[REDACTED]@h/p``;
- an ``Authorization``/``Proxy-Authorization`` value, a ``Bearer``/``Basic``/``Token`` credential;
- the value of a key named like a secret (``token``, ``password``, ``passwd``, ``secret``, ``api_key``,
  ``access_key``, ``signature``, ``passphrase``, ``credential``): ``token=[REDACTED]``,
  ``"password": "[REDACTED]"``;
- any literal the caller names as secret (a passphrase, an address).
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# scheme://[userinfo@]host[...][?query][#fragment]; a URL ends at whitespace or a quote.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>`]+)")
_SCHEMES = ("Bearer", "Basic", "Token", "Digest", "Negotiate", "AWS4-HMAC-SHA256")
_CREDENTIAL = re.compile(rf"\b(?P<scheme>{'|'.join(_SCHEMES)})\s+(?!\[REDACTED\])[^\s'\",;]+", re.IGNORECASE)
_AUTH_HEADER = re.compile(
    r"(?P<name>\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])(?P<value>[^\s'\",}][^\r\n'\",}]*)",
    re.IGNORECASE,
)
_SECRET_KEY = r"[A-Za-z0-9_.-]*(?:token|password|passwd|secret|api[_-]?key|access[_-]?key|signature|passphrase|credential)[A-Za-z0-9_.-]*"  # noqa: E501
_KEY_VALUE = re.compile(
    rf"(?P<key>\b{_SECRET_KEY}[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])(?P<value>[^\s'\",&;}}]+)", re.IGNORECASE
)


_DONE = re.compile(r"\[REDACTED\][).,;:]*")  # a query redacted already, and what closes the sentence around it


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential it holds replaced by ``[REDACTED]`` (see the module's docstring)."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    if "://" in text:
        text = _URL.sub(_url, text)
    text = _AUTH_HEADER.sub(lambda m: m["name"] + REDACTED, text)
    text = _CREDENTIAL.sub(lambda m: f"{m['scheme']} {REDACTED}", text)
    return _KEY_VALUE.sub(lambda m: m["key"] + REDACTED, text)


def redacted_traceback(exc: BaseException) -> str:
    """``exc``'s traceback, its chain included, as logging shows it, with the credentials redacted (an exception's
    message, or its cause's, may quote a signed URL)."""
    return redact("".join(traceback.format_exception(exc))).rstrip()


class RedactingFormatter(logging.Formatter):
    """Log lines, tracebacks included, with the credentials redacted: whatever a driver, or a library it uses,
    logs with a signed URL or a token in it."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redact_url(url: str) -> str:
    """One URL, its query and credentials redacted (the scheme, host and path are kept: they say where)."""
    return _URL.sub(_url, url)


def is_secret_key(name: str) -> bool:
    """Whether a parameter or header named ``name`` carries a credential by its name."""
    return re.fullmatch(_SECRET_KEY, name, re.IGNORECASE) is not None or name.lower() in (
        "authorization",
        "proxy-authorization",
        "cookie",
    )


def _url(match: re.Match) -> str:
    """A URL with its userinfo, query and fragment (OAuth puts tokens there) redacted."""
    rest = match["rest"]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    where, tail = rest[:cut], rest[cut:]
    authority, slash, path = where.partition("/")
    if "@" in authority:  # user:password@host (the user alone may be a token too: GitHub's, for one)
        authority = REDACTED + "@" + authority.rpartition("@")[2]
    if tail and not _DONE.fullmatch(tail[1:]):
        tail = tail[0] + REDACTED
    return match["scheme"] + authority + slash + path + tail
