"""Storage: the `Store` protocol and the store for a database URL."""

from __future__ import annotations

from ..errors import ConfigError
from ..settings import Settings
from .base import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
MIGRATE_MODES = ("manual", "auto")


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def open_store(settings: Settings) -> Store:
    """The store for `[database] url` (not yet opened): SQLite for `sqlite://`, PostgreSQL for
    `postgresql://` or `postgres://`."""
    db = settings.database
    url = db.url
    if db.migrate not in MIGRATE_MODES:
        raise ConfigError(f'{settings.source}: [database] migrate must be "manual" or "auto"')
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStore  # noqa: PLC0415

        return SqliteStore(url, busy_timeout_s=db.busy_timeout)
    if is_postgres(url):
        _check_postgres_settings(settings)
        from .postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(
            url,
            pool_min=db.pool_min,
            pool_max=db.pool_max,
            statement_timeout_s=db.statement_timeout,
            connect_timeout_s=db.connect_timeout,
            migrate=db.migrate,
        )
    raise ConfigError(f"{settings.source}: [database] url {url.split('://')[0]}:// is not supported")


def _check_postgres_settings(settings: Settings) -> None:
    db = settings.database
    where = f"{settings.source}: [database]"
    if db.pool_max < 1 or db.pool_min < 0 or db.pool_min > db.pool_max:
        raise ConfigError(f"{where} needs 0 <= pool_min <= pool_max and pool_max >= 1")
    if db.statement_timeout <= 0 or db.connect_timeout <= 0:
        raise ConfigError(f"{where} statement_timeout and connect_timeout must be above 0")
    try:
        import asyncpg  # noqa: F401, PLC0415
    except ImportError:
        raise ConfigError(f"{where} url is PostgreSQL, but the asyncpg package is not installed") from None


__all__ = ["Store", "is_postgres", "open_store"]
