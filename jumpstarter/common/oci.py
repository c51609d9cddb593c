"""Registry credentials for drivers that pull OCI images (flashers, qemu, ridesx).

``resolve_oci_credentials()`` takes, in this order: explicit arguments, $OCI_USERNAME/$OCI_PASSWORD, then the
auth files podman and docker write after ``login``, so a lab that is logged in needs no extra configuration.
Auth files are searched in this order:

1. $REGISTRY_AUTH_FILE
2. $XDG_RUNTIME_DIR/containers/auth.json (podman)
3. ~/.config/containers/auth.json (podman)
4. $DOCKER_CONFIG/config.json, then ~/.docker/config.json (docker)

An image named without a registry (``ubuntu:22.04``) is looked up under each of the host's
``unqualified-search-registries`` (containers-registries.conf), docker.io when none are configured.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jumpstarter.extras import missing_extra

try:
    from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator, model_validator
except ModuleNotFoundError as exc:
    raise missing_extra(exc, __name__) from None

__all__ = ["OciCredentials", "parse_oci_registry", "read_auth_file_credentials", "resolve_oci_credentials"]

logger = logging.getLogger(__name__)

_BOTH_OR_NEITHER = "OCI authentication requires both username and password"
_DIGEST = re.compile(r"@sha(?:256|384|512):[0-9a-fA-F]+")
_DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})


class OciCredentials(BaseModel):
    """A registry username and password: both set, or both None (anonymous pulls).

    Blank or whitespace-only values count as unset, and surrounding whitespace is dropped; giving only one
    of the two fails validation. The password is a SecretStr so it stays out of reprs and logs.
    """

    model_config = ConfigDict(frozen=True)

    username: str | None = None
    password: SecretStr | None = None

    @field_validator("username", "password", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return value.strip() or None
        return value

    @model_validator(mode="after")
    def _both_or_neither(self) -> OciCredentials:
        if (self.username is None) != (self.password is None):
            raise ValueError(_BOTH_OR_NEITHER)
        return self

    @property
    def plain_password(self) -> str | None:
        """The password as plain text, for the tool that needs it; None when unset."""
        return self.password.get_secret_value() if self.password is not None else None

    @property
    def is_authenticated(self) -> bool:
        """True when there are credentials to log in with."""
        return self.username is not None and self.password is not None


def _get_registries_conf_paths() -> list[Path]:
    """containers-registries.conf files, the user's first."""
    return [
        Path.home() / ".config" / "containers" / "registries.conf",
        Path("/etc/containers/registries.conf"),
        Path("/usr/share/containers/registries.conf"),
    ]


@lru_cache(maxsize=1)
def _get_unqualified_search_registries() -> tuple[str, ...]:
    """The registries a bare image name is searched in: the first registries.conf that lists some, else docker.io."""
    for conf in _get_registries_conf_paths():
        if not conf.is_file():
            continue
        try:
            with conf.open("rb") as f:
                listed = tomllib.load(f).get("unqualified-search-registries", [])
        except (OSError, tomllib.TOMLDecodeError) as exc:
            logger.debug("Skipping registries.conf %s: %s", conf, exc)
            continue
        registries = tuple(r for r in listed if isinstance(r, str) and r.strip()) if isinstance(listed, list) else ()
        if registries:
            logger.debug("Read unqualified-search-registries from %s: %s", conf, registries)
            return registries
    return (_DOCKER_HUB,)


def _names_registry(component: str, *, alone: bool) -> bool:
    """Whether the first component of an image reference is a registry host rather than part of the image name.

    ``alone`` says the reference has no "/": then ``name:tag`` is an image, though ``host:5000`` is a registry.
    """
    _, colon, after = component.partition(":")
    if colon and after.isdigit():
        return True
    if colon and alone:
        return False
    return "." in component or component == "localhost"


def _parse_registries_for_url(oci_url: str) -> tuple[str, ...]:
    """The registries an image reference may live in: its own, or the search registries for a bare name."""
    reference = _DIGEST.sub("", oci_url.removeprefix("oci://"))  # a digest's ":" would read as a port or tag
    first, slash, _ = reference.partition("/")
    if _names_registry(first, alone=not slash):
        return (first,)
    return _get_unqualified_search_registries()


def parse_oci_registry(oci_url: str) -> str:
    """The registry (``host`` or ``host:port``) of an image reference, with or without ``oci://``.

    A bare name (``ubuntu:22.04``, ``library/ubuntu``) gives the first unqualified-search registry.
    """
    return _parse_registries_for_url(oci_url)[0]


def _get_auth_file_paths() -> list[Path]:
    """The auth files to search, in the order of the module's docstring (read from the environment each call)."""
    paths: list[Path] = []
    if explicit := os.environ.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(explicit))
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(runtime) / "containers" / "auth.json")
    paths.append(Path.home() / ".config" / "containers" / "auth.json")
    if docker_config := os.environ.get("DOCKER_CONFIG"):
        paths.append(Path(docker_config) / "config.json")
    paths.append(Path.home() / ".docker" / "config.json")
    return paths


def _normalize_registry(registry: str) -> str:
    """A registry key as auth files write it, reduced for comparison: ``https://index.docker.io/v1/`` -> docker.io."""
    if "://" in registry:
        parsed = urlparse(registry)
        registry = parsed.netloc or parsed.path.split("/")[0]
    registry = registry.rstrip("/")
    if registry.split(":")[0] in _DOCKER_HUB_ALIASES:
        return _DOCKER_HUB
    return registry


def _credentials_of_entry(key: str, entry: dict[str, Any]) -> OciCredentials:
    """The credentials of one ``auths`` entry: its base64 ``auth``, else its ``username``/``password`` fields."""
    encoded = entry.get("auth")
    if encoded:
        try:
            username, password = base64.b64decode(encoded, validate=True).decode("utf-8").split(":", 1)
            if username and password:
                return OciCredentials(username=username, password=password)
        except (binascii.Error, ValueError, TypeError) as exc:  # ValueError covers decoding and validation
            logger.warning("Failed to decode auth entry for %s: %s", key, exc)
    plain_username, plain_password = entry.get("username"), entry.get("password")
    if plain_username and plain_password:
        try:
            return OciCredentials(username=plain_username, password=plain_password)
        except ValidationError as exc:
            logger.warning("Failed to validate auth entry for %s: %s", key, exc)
    return OciCredentials()


def _lookup_credentials_in_auth_data(auth_data: Any, registry: str) -> OciCredentials:
    """The first usable credentials an auth file holds for ``registry`` (already normalized), else none."""
    auths = auth_data.get("auths") if isinstance(auth_data, dict) else None
    if not isinstance(auths, dict):
        return OciCredentials()
    for key, entry in auths.items():
        if isinstance(entry, dict) and _normalize_registry(key) == registry:
            creds = _credentials_of_entry(key, entry)
            if creds.is_authenticated:
                return creds
    return OciCredentials()


def read_auth_file_credentials(oci_url: str) -> OciCredentials:
    """Credentials for the image's registry from podman/docker auth files; empty ``OciCredentials()`` if none.

    Registries are tried in order (several for a bare image name), each in every auth file; the first match
    wins. Unreadable or malformed files are skipped.
    """
    registries = _parse_registries_for_url(oci_url)
    for registry in registries:
        wanted = _normalize_registry(registry)
        for path in _get_auth_file_paths():
            if not path.is_file():
                continue
            try:
                auth_data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
                logger.debug("Skipping auth file %s: %s", path, exc)
                continue
            creds = _lookup_credentials_in_auth_data(auth_data, wanted)
            if creds.is_authenticated:
                logger.info("Found OCI registry credentials for %s in %s", registry, path)
                return creds
    logger.debug("No credentials found for %s in any auth file", registries)
    return OciCredentials()


def resolve_oci_credentials(oci_url: str, username: str | None = None, password: str | None = None) -> OciCredentials:
    """Credentials to pull ``oci_url`` with: the arguments, else $OCI_USERNAME/$OCI_PASSWORD, else auth files.

    Blank values count as unset and fall through to the next source. Giving only one of ``username`` and
    ``password`` is a ValueError; setting only one of the two variables is logged and skipped.
    """
    if username is not None or password is not None:
        try:
            creds = OciCredentials(username=username, password=password)
        except ValidationError:
            raise ValueError(_BOTH_OR_NEITHER) from None
        if creds.is_authenticated:
            return creds

    env_username, env_password = os.environ.get("OCI_USERNAME"), os.environ.get("OCI_PASSWORD")
    if env_username is not None or env_password is not None:
        try:
            creds = OciCredentials(username=env_username, password=env_password)
        except ValidationError:
            logger.warning("Only one of OCI_USERNAME/OCI_PASSWORD is set; ignoring them and checking auth files")
        else:
            if creds.is_authenticated:
                logger.info("Using OCI registry credentials from environment variables")
                return creds

    return read_auth_file_credentials(oci_url)
