"""Exporter-side driver API, under upstream Jumpstarter's names."""

from jumpstarter.driver.base import Composite, Driver
from jumpstarter.driver.decorators import export, exportstream
from jumpstarter.driver.flasher import FlasherInterface

__all__ = ["Composite", "Driver", "FlasherInterface", "export", "exportstream"]
