"""The SQLite store: every query of the gateway, each scoped to its tenant, in three parts
(tenants, hooks, deliveries) over one `Database` (gateway/store/database.py)."""

from __future__ import annotations

from ..database import Database, sqlite_path
from ..models import MAX_SECRETS_PER_HOOK
from .deliveries import DeliveryQueries
from .gauges import GaugeQueries
from .health import HealthQueries
from .hooks import HookQueries
from .lanes import LANE_DUE_SQL
from .operational import OperationalQueries
from .sessions import SessionQueries
from .tenants import TenantQueries


class SqliteStore(
    TenantQueries, HookQueries, DeliveryQueries, SessionQueries, HealthQueries, GaugeQueries,
    OperationalQueries,
):
    """Implements `gateway.store.base.Store` on SQLite."""

    def __init__(self, url: str, *, busy_timeout_s: float = 5.0, synchronous: str = "FULL") -> None:
        self.db = Database(sqlite_path(url), busy_timeout_s=busy_timeout_s, synchronous=synchronous)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.ping()


__all__ = ["LANE_DUE_SQL", "MAX_SECRETS_PER_HOOK", "SqliteStore"]
