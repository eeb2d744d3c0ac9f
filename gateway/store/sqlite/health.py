"""What the dashboard's health views read on SQLite: a hook's recent attempts, paused
destinations, and the backlog of each tenant."""

from __future__ import annotations

import sqlite3

from ..database import Database
from ..models import AttemptSample, Backlog, Pause


class HealthQueries:
    db: Database

    async def attempt_samples(
        self, tenant_id: str, hook_id: str, *, since: float, created_since: float, limit: int
    ) -> list[AttemptSample]:
        """Attempts to the tenant's hook started at or after `since`, of deliveries created at or
        after `created_since` (what the deliveries index can range over): the latest `limit`."""

        def op(c: sqlite3.Connection) -> list[AttemptSample]:
            rows = c.execute(
                "SELECT a.started_at, a.duration_ms, a.status_code, a.error FROM deliveries d"
                " JOIN attempts a ON a.delivery_id = d.id"
                " WHERE d.tenant_id = ? AND d.hook_id = ? AND d.created_at >= ? AND a.started_at >= ?"
                " ORDER BY a.started_at DESC LIMIT ?",
                (tenant_id, hook_id, created_since, since, limit),
            ).fetchall()
            return [AttemptSample(float(r[0]), float(r[1]), r[2], r[3]) for r in rows]

        return await self.db.read(op)

    async def list_pauses(self, now: float, *, tenant_id: str | None = None, limit: int = 100) -> list[Pause]:
        """Destinations paused now (of one tenant, or of all), the longest pause first."""

        def op(c: sqlite3.Connection) -> list[Pause]:
            if tenant_id is None:
                rows = c.execute(
                    "SELECT tenant_id, destination, until FROM destination_pauses WHERE until > ?"
                    " ORDER BY until DESC LIMIT ?",
                    (now, limit),
                ).fetchall()
            else:
                rows = c.execute(
                    "SELECT tenant_id, destination, until FROM destination_pauses"
                    " WHERE tenant_id = ? AND until > ? ORDER BY until DESC LIMIT ?",
                    (tenant_id, now, limit),
                ).fetchall()
            return [Pause(r[0], r[1], float(r[2])) for r in rows]

        return await self.db.read(op)

    async def backlog_by_tenant(self, *, limit: int = 100) -> list[Backlog]:
        """Pending deliveries per tenant, the largest backlog first."""

        def op(c: sqlite3.Connection) -> list[Backlog]:
            rows = c.execute(
                "SELECT tenant_id, COUNT(*) AS n FROM deliveries WHERE status = 'pending'"
                " GROUP BY tenant_id ORDER BY n DESC, tenant_id LIMIT ?",
                (limit,),
            ).fetchall()
            return [Backlog(r[0], int(r[1])) for r in rows]

        return await self.db.read(op)
