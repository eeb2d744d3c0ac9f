"""What `/metrics` reads from SQLite when it is scraped: pending deliveries by state, the oldest
one, paused destinations, disabled hooks. Each count reads an index only (the lanes' and the
leases' partial indexes), so a scrape of a large backlog costs a scan of that index, no more."""

from __future__ import annotations

import sqlite3

from ..database import Database
from ..models import PARKED_AT, QueueGauges

# One pass over the lanes' index (hook_id, next_attempt_at; rowid) of pending rows. The rowid
# is the order rows were inserted in: the oldest pending delivery is the one of the smallest.
_PENDING_SQL = (
    "SELECT COUNT(*), COALESCE(SUM(next_attempt_at <= ?1), 0), COALESCE(SUM(next_attempt_at >= ?2), 0),"
    " MIN(rowid) FROM deliveries WHERE status = 'pending'"
)
# Leased rows whose lease has not run out (an expired lease is due again).
_IN_FLIGHT_SQL = (
    "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND lease_owner IS NOT NULL"
    " AND next_attempt_at > ?1 AND next_attempt_at < ?2"
)


class GaugeQueries:
    db: Database

    async def queue_gauges(self, now: float) -> QueueGauges:
        """The database's part of the metrics, read in one snapshot."""

        def op(c: sqlite3.Connection) -> QueueGauges:
            c.execute("BEGIN")
            try:
                total, due, parked, oldest_row = c.execute(_PENDING_SQL, (now, PARKED_AT)).fetchone()
                in_flight = int(c.execute(_IN_FLIGHT_SQL, (now, PARKED_AT)).fetchone()[0])
                oldest = None
                if oldest_row is not None:
                    row = c.execute("SELECT created_at FROM deliveries WHERE rowid = ?",
                                    (oldest_row,)).fetchone()
                    oldest = float(row[0]) if row is not None else None
                paused = int(c.execute("SELECT COUNT(*) FROM destination_pauses WHERE until > ?",
                                       (now,)).fetchone()[0])
                disabled = dict(c.execute(
                    "SELECT CASE WHEN disabled_reason IS NULL THEN 'tenant' ELSE 'gateway' END, COUNT(*)"
                    " FROM hooks WHERE enabled = 0 GROUP BY 1"
                ).fetchall())
            finally:
                c.execute("COMMIT")
            scheduled = max(0, int(total) - int(due) - int(parked) - in_flight)
            return QueueGauges(
                pending={"due": int(due), "scheduled": scheduled, "in_flight": in_flight,
                         "parked": int(parked)},
                oldest_pending_at=oldest,
                paused_destinations=paused,
                disabled_hooks={by: int(disabled.get(by, 0)) for by in ("gateway", "tenant")},
            )

        return await self.db.read(op)
