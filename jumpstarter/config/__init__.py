"""Exporter configuration: an ExporterConfig YAML read into a driver tree (``loader``), upstream's names for it
(``exporter``), client configuration (``client``) and environment (``env``)."""

from jumpstarter.config.loader import (
    API_VERSION,
    KIND,
    BuildStopped,
    DriverEntry,
    ExporterConfig,
    import_driver_class,
)

__all__ = ["API_VERSION", "KIND", "BuildStopped", "DriverEntry", "ExporterConfig", "import_driver_class"]
