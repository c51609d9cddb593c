"""Upstream's names for the client's error kinds and its async client base, for drivers written against them.

Our client classes have blocking and async methods on one class, so ``AsyncDriverClient`` is ``DriverClient``.
"""

from jumpstarter.client.base import DriverClient
from jumpstarter.errors import DriverError, DriverInvalidArgument, DriverNotImplemented, LeaseError

AsyncDriverClient = DriverClient
DriverMethodNotImplemented = DriverNotImplemented
ExporterNotReady = LeaseError  # the exporter refused the call: someone else holds it, or our lease ended

__all__ = [
    "AsyncDriverClient",
    "DriverError",
    "DriverInvalidArgument",
    "DriverMethodNotImplemented",
    "ExporterNotReady",
]
