"""What the dashboard's health views read on PostgreSQL: a hook's recent attempts, paused
destinations, and the backlog of each tenant."""

from __future__ import annotations

from typing import Any

from ..models import AttemptSample, Backlog, Pause
from .database import Database
from .rows import has_nul


class HealthQueries:
    db: Database

    async def attempt_samples(
        self, tenant_id: str, hook_id: str, *, since: float, created_since: float, limit: int
    ) -> list[AttemptSample]:
        """Attempts to the tenant's hook started at or after `since`, of deliveries created at or
        after `created_since` (what the deliveries index can range over): the latest `limit`."""
        if has_nul(tenant_id, hook_id):
            return []

        async def op(c: Any) -> list[AttemptSample]:
            rows = await c.fetch(
                "SELECT a.started_at, a.duration_ms, a.status_code, a.error FROM deliveries d"
                " JOIN attempts a ON a.delivery_id = d.id"
                " WHERE d.tenant_id = $1 AND d.hook_id = $2 AND d.created_at >= $3 AND a.started_at >= $4"
                " ORDER BY a.started_at DESC LIMIT $5",
                tenant_id,
                hook_id,
                float(created_since),
                float(since),
                limit,
            )
            return [AttemptSample(float(r[0]), float(r[1]), r[2], r[3]) for r in rows]

        return await self.db.read(op)

    async def list_pauses(self, now: float, *, tenant_id: str | None = None, limit: int = 100) -> list[Pause]:
        """Destinations paused now (of one tenant, or of all), the longest pause first."""
        if has_nul(tenant_id):
            return []

        async def op(c: Any) -> list[Pause]:
            if tenant_id is None:
                rows = await c.fetch(
                    "SELECT tenant_id, destination, until FROM destination_pauses WHERE until > $1"
                    " ORDER BY until DESC LIMIT $2",
                    float(now),
                    limit,
                )
            else:
                rows = await c.fetch(
                    "SELECT tenant_id, destination, until FROM destination_pauses"
                    " WHERE tenant_id = $1 AND until > $2 ORDER BY until DESC LIMIT $3",
                    tenant_id,
                    float(now),
                    limit,
                )
            return [Pause(r[0], r[1], float(r[2])) for r in rows]

        return await self.db.read(op)

    async def backlog_by_tenant(self, *, limit: int = 100) -> list[Backlog]:
        """Pending deliveries per tenant, the largest backlog first."""

        async def op(c: Any) -> list[Backlog]:
            rows = await c.fetch(
                "SELECT tenant_id, COUNT(*) AS n FROM delivery_queue"
                " GROUP BY tenant_id ORDER BY n DESC, tenant_id LIMIT $1",
                limit,
            )
            return [Backlog(r[0], int(r[1])) for r in rows]

        return await self.db.read(op)
