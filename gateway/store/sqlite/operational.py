"""What operating the gateway needs of SQLite (issue 14): each hook's run of failed attempts
and its auto-disable, and the start and end of destination pauses, each seen exactly once so
that `destination.paused` / `destination.resumed` are announced once (gateway/delivery/
ops_events.py)."""

from __future__ import annotations

import sqlite3

from ..database import Database
from ..models import PARKED_AT, Outcome, Pause

_FAILED_SQL = "UPDATE hooks SET failing_since = ? WHERE id = ? AND failing_since IS NULL"
_SUCCEEDED_SQL = "UPDATE hooks SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL"
# As an edit that disables the hook (gateway/store/sqlite/hooks.py update_hook): its pending
# deliveries are parked, except one in flight (its outcome moves it on).
PARK_SQL = (
    "UPDATE deliveries SET next_attempt_at = ? WHERE hook_id = ? AND status = 'pending'"
    " AND (lease_owner IS NULL OR next_attempt_at <= ?)"
)


def note_attempt(c: sqlite3.Connection, o: Outcome, now: float) -> None:
    """Keep the hook's `failing_since` with the attempt it comes from (record_outcomes): a
    success clears it, a failed attempt that used a try starts it when it is not running. A 429
    or a send cut off by a shutdown uses no try and changes nothing. Neither writes a page when
    nothing changes (the common case: a success of a hook that was not failing)."""
    if not o.hook_id or o.attempt is None:
        return
    if o.status == "succeeded":
        c.execute(_SUCCEEDED_SQL, (o.hook_id,))
    elif o.uses_attempt:
        c.execute(_FAILED_SQL, (now, o.hook_id))


class OperationalQueries:
    db: Database

    async def disable_failing_hook(
        self, tenant_id: str, hook_id: str, *, failing_before: float, reason: str, now: float
    ) -> bool:
        """Disable the hook with `reason` if it is enabled, its run of failed attempts began at or
        before `failing_before`, and it was not edited (re-enabled, say) since then. Its pending
        deliveries are parked as for any disable. True when this call disabled it."""

        def op(c: sqlite3.Connection) -> bool:
            row = c.execute(
                "UPDATE hooks SET enabled = 0, disabled_reason = ?, updated_at = ?"
                " WHERE tenant_id = ? AND id = ? AND enabled = 1 AND failing_since IS NOT NULL"
                " AND failing_since <= ? AND updated_at <= ? RETURNING id",
                (reason, now, tenant_id, hook_id, failing_before, failing_before),
            ).fetchone()
            if row is None:
                return False
            c.execute(PARK_SQL, (PARKED_AT, hook_id, now))
            return True

        return await self.db.write(op)

    async def start_pause(self, tenant_id: str, destination: str, until: float) -> bool:
        """Pause the destination until `until` (a longer pause already there stays); True when
        this began a pause, False when it lengthened (or left) one already recorded."""

        def op(c: sqlite3.Connection) -> bool:
            known = c.execute(
                "SELECT 1 FROM destination_pauses WHERE tenant_id = ? AND destination = ?",
                (tenant_id, destination),
            ).fetchone()
            c.execute(
                "INSERT INTO destination_pauses (tenant_id, destination, until) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant_id, destination) DO UPDATE SET until = MAX(until, excluded.until)",
                (tenant_id, destination, until),
            )
            return known is None

        return await self.db.write(op)

    async def end_pauses(self, now: float) -> list[Pause]:
        """Remove the pauses that have run out and return them: each to one caller only."""

        def ended(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT 1 FROM destination_pauses WHERE until <= ? LIMIT 1", (now,)).fetchone()
            return row is not None

        def op(c: sqlite3.Connection) -> list[Pause]:
            rows = c.execute(
                "DELETE FROM destination_pauses WHERE until <= ? RETURNING tenant_id, destination, until",
                (now,),
            ).fetchall()
            return [Pause(r[0], r[1], float(r[2])) for r in rows]

        if not await self.db.read(ended):  # the common case: a read, not a write every time
            return []
        return await self.db.write(op)
