"""Finding an address of this host that other machines can reach, for drivers that serve files (http, tftp)."""

from __future__ import annotations

import asyncio
import logging
import socket
from ipaddress import ip_address

__all__ = ["get_ip_address", "get_minikube_ip"]

# AS112's anycast address: connecting a UDP socket to it sends nothing but makes the kernel pick the
# source address of the default route.
_ROUTE_PROBE = ("192.175.48.1", 53)


def get_ip_address(logger: logging.Logger | None = None) -> str:
    """This host's address: its hostname's, unless that is loopback; then the default route's; else 0.0.0.0."""
    try:
        address = socket.gethostbyname(socket.gethostname())
        if address and not ip_address(address).is_loopback:
            return address
    except socket.gaierror:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_ROUTE_PROBE)
            return probe.getsockname()[0]
    except Exception:
        if logger:
            logger.warning("Could not determine default IP address, falling back to 0.0.0.0")
        return "0.0.0.0"


async def get_minikube_ip(profile: str | None = None, minikube: str = "minikube") -> str:
    """The address ``minikube ip`` prints (for ``profile`` when given); RuntimeError with its stderr if it fails."""
    args = [minikube, "ip", *(["-p", profile] if profile else [])]
    pipe = asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(*args, stdout=pipe, stderr=pipe)
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(stderr.decode())
    return stdout.decode().strip()
