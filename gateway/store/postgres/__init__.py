"""The PostgreSQL store: the same queries as SQLite's (gateway/store/sqlite/), each scoped to its
tenant, in three parts (tenants, hooks, deliveries) over one `Database` (an asyncpg pool), safe
with several instances on one database.

For what needs more than the `Store` protocol (the parts of a deployment of several instances):
`store.db.connect()` opens a connection of its own, outside the pool (LISTEN/NOTIFY, advisory
locks); `store.db.pool` is the asyncpg pool; `store.db.dsn` the URL.
"""

from __future__ import annotations

from ..models import MAX_SECRETS_PER_HOOK
from . import schema
from .database import Database, redact
from .deliveries import DeliveryQueries
from .gauges import GaugeQueries
from .health import HealthQueries
from .hooks import HookQueries
from .lanes import LANE_DUE_SQL
from .operational import OperationalQueries
from .schema import SchemaNotReady
from .sessions import SessionQueries
from .tenants import TenantQueries


class PostgresStore(
    TenantQueries, HookQueries, DeliveryQueries, SessionQueries, HealthQueries, GaugeQueries,
    OperationalQueries,
):
    """Implements `gateway.store.base.Store` on PostgreSQL."""

    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 2,
        pool_max: int = 10,
        statement_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        migrate: str = "manual",
    ) -> None:
        self.db = Database(
            url,
            pool_min=pool_min,
            pool_max=pool_max,
            statement_timeout_s=statement_timeout_s,
            connect_timeout_s=connect_timeout_s,
            migrate=migrate,
        )
        self._group_commits()

    async def open(self) -> None:
        """Open the pool. Refuses (`SchemaNotReady`, naming `gateway migrate`) a database that
        lacks migrations, unless the store was made with `migrate="auto"`."""
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.ping()

    async def migrate(self) -> tuple[int, int]:
        """Apply the missing migrations (without opening the pool); returns the schema version
        (before, after)."""
        conn = await self.db.connect()
        try:
            done = {m.version for m in await schema.migrate(conn)}
            versions = await schema.applied(conn)
        finally:
            await conn.close()
        return max(versions - done, default=0), max(versions, default=0)


__all__ = ["LANE_DUE_SQL", "MAX_SECRETS_PER_HOOK", "PostgresStore", "SchemaNotReady", "redact"]
