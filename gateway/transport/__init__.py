"""The outbound HTTP client of deliveries and blocking calls (see `client.py` for why it is ours)."""

from .client import Transport, header_lines
from .connection import Answer
from .target import Target

__all__ = ["Answer", "Target", "Transport", "header_lines"]
