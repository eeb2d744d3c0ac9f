"""Storage: the `Store` protocol and the store for a database URL."""

from __future__ import annotations

from ..errors import ConfigError
from ..settings import Settings
from .base import Store


def open_store(settings: Settings) -> Store:
    """The store for `[database] url` (not yet opened)."""
    url = settings.database.url
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStore

        return SqliteStore(url, busy_timeout_s=settings.database.busy_timeout)
    raise ConfigError(f"{settings.source}: [database] url {url.split('://')[0]}:// is not supported yet")


__all__ = ["Store", "open_store"]
