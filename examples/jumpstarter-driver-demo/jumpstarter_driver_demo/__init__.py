"""A simulated board with a power switch: one of every kind of exported method."""

from .client import BoardClient, PowerClient
from .driver import Board, Power

__all__ = ["Board", "BoardClient", "Power", "PowerClient"]
