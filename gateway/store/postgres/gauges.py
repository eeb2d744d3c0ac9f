"""What `/metrics` reads from PostgreSQL when it is scraped: pending deliveries by state, the
oldest one, paused destinations, disabled hooks. The pending rows are read once, from the queue
of pending deliveries (finished deliveries are not looked at)."""

from __future__ import annotations

from typing import Any

from ..models import PARKED_AT, QueueGauges
from .database import Database

# An expired lease is due again: in flight means leased with the lease still running.
_PENDING_SQL = (
    "SELECT count(*), count(*) FILTER (WHERE q.due <= $1),"
    " count(*) FILTER (WHERE q.due >= $2),"
    " count(*) FILTER (WHERE q.lease_owner IS NOT NULL AND q.due > $1 AND q.due < $2),"
    " min(d.created_at) FROM delivery_queue q JOIN deliveries d ON d.id = q.delivery_id"
)
_DISABLED_SQL = (
    "SELECT CASE WHEN disabled_reason IS NULL THEN 'tenant' ELSE 'gateway' END, count(*)"
    " FROM hooks WHERE NOT enabled GROUP BY 1"
)


class GaugeQueries:
    db: Database

    async def queue_gauges(self, now: float) -> QueueGauges:
        """The database's part of the metrics, read in one snapshot."""

        async def op(c: Any) -> QueueGauges:
            async with c.transaction(isolation="repeatable_read", readonly=True):
                total, due, parked, in_flight, oldest = await c.fetchrow(_PENDING_SQL, float(now), PARKED_AT)
                paused = await c.fetchval(
                    "SELECT count(*) FROM destination_pauses WHERE until > $1", float(now))
                disabled = {r[0]: int(r[1]) for r in await c.fetch(_DISABLED_SQL)}
            scheduled = max(0, int(total) - int(due) - int(parked) - int(in_flight))
            return QueueGauges(
                pending={"due": int(due), "scheduled": scheduled, "in_flight": int(in_flight),
                         "parked": int(parked)},
                oldest_pending_at=float(oldest) if oldest is not None else None,
                paused_destinations=int(paused),
                disabled_hooks={"gateway": disabled.get("gateway", 0), "tenant": disabled.get("tenant", 0)},
            )

        return await self.db.read(op)
