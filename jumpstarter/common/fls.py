"""Locating ``fls``, the flasher that writes OCI images to devices over fastboot, for the drivers that run it.

By default the ``fls`` on PATH is used (container images ship it). A driver's configuration may instead ask
for a release from GitHub (``fls_version``) or, only when it also sets ``allow_custom_binaries``, a binary
from any URL. Nothing is downloaded until ``get_fls_binary()``/``download_fls()`` is called.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import urllib.request
from pathlib import Path

__all__ = ["FLS_GITHUB_REPO", "download_fls", "get_fls_binary", "get_fls_github_url"]

logger = logging.getLogger(__name__)

FLS_GITHUB_REPO = "jumpstarter-dev/fls"

_X86_64 = "fls-x86_64-linux"
_AARCH64 = "fls-aarch64-linux-musl"  # also the default: the boards fls runs on are mostly arm64
_BINARIES = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}
_CHUNK = 8192


def get_fls_github_url(version: str, arch: str | None = None) -> str:
    """The download URL of fls ``version`` for ``arch`` (this machine's when None; unknown ones get aarch64).

    Flasher drivers pass the target board's arch, since fls runs there rather than on the exporter.
    """
    machine = (arch if arch is not None else platform.machine()).lower()
    binary = _BINARIES.get(machine, _AARCH64)
    return f"https://github.com/{FLS_GITHUB_REPO}/releases/download/{version}/{binary}"


def download_fls(url: str, timeout: float = 30.0) -> str:
    """Download an fls binary to a new executable temp file and return its path; RuntimeError if that fails.

    The bytes go to ``<path>.part`` first, synced and renamed into place, so the returned path never holds
    a partial binary.
    """
    fd, binary_path = tempfile.mkstemp(prefix="fls-")
    os.close(fd)
    partial = f"{binary_path}.part"
    try:
        logger.info("Downloading FLS binary from: %s", url)
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        Path(partial).chmod(0o755)
        os.replace(partial, binary_path)
    except Exception as exc:
        for leftover in (partial, binary_path):
            Path(leftover).unlink(missing_ok=True)
        logger.error("Failed to download FLS from %s: %s", url, exc)
        raise RuntimeError(f"Failed to download FLS from {url}: {exc}") from exc
    logger.info("FLS binary downloaded to: %s", binary_path)
    return binary_path


def get_fls_binary(
    fls_version: str | None = None,
    fls_binary_url: str | None = None,
    allow_custom_binaries: bool = False,
) -> str:
    """The fls to run: a download from ``fls_binary_url``, else a GitHub release ``fls_version``, else "fls".

    A custom URL is refused (RuntimeError) unless ``allow_custom_binaries`` is set, since the exporter would
    run whatever it serves.
    """
    if fls_binary_url:
        if not allow_custom_binaries:
            raise RuntimeError(
                "Custom FLS binary URLs are disabled for security. "
                "Set allow_custom_binaries=True in driver configuration to enable."
            )
        logger.warning("Downloading a custom FLS binary from %s: make sure this URL is trusted", fls_binary_url)
        return download_fls(fls_binary_url)
    if fls_version:
        url = get_fls_github_url(fls_version)
        logger.warning("Downloading FLS version %s from GitHub: %s", fls_version, url)
        return download_fls(url)
    logger.debug("Using the FLS on PATH")
    return "fls"
