"""What operating the gateway needs of PostgreSQL (issue 14), as SQLite's (gateway/store/sqlite/
operational.py): each hook's run of failed attempts and its auto-disable, and the start and end
of destination pauses, each seen by one instance only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..models import PARKED_AT, Outcome, Pause
from . import lanes
from .database import Database
from .rows import has_nul

CLEAR_FAILING_SQL = (
    "UPDATE hooks SET failing_since = NULL WHERE id = ANY($1::text[]) AND failing_since IS NOT NULL"
)
_START_SQL = (
    "UPDATE hooks SET failing_since = u.t FROM unnest($1::text[], $2::float8[]) AS u(id, t)"
    " WHERE hooks.id = ANY($1::text[]) AND hooks.id = u.id AND hooks.failing_since IS NULL"
)
_RESTART_SQL = (
    "UPDATE hooks SET failing_since = u.t FROM unnest($1::text[], $2::float8[]) AS u(id, t)"
    " WHERE hooks.id = ANY($1::text[]) AND hooks.id = u.id"
)


@dataclass(frozen=True, slots=True)
class FailingChanges:
    """What a batch of attempts changes in its hooks' `failing_since` (`failing_changes`)."""

    cleared: list[str]  # hooks whose run of failures ends (a success), sorted
    restarted: list[tuple[str, float]]  # cleared, then failing again within the batch from then
    fresh: list[tuple[str, float]]  # failing from then, unless their run already began


def failing_changes(outcomes: Sequence[tuple[Outcome, float]]) -> FailingChanges:
    """Each hook's `failing_since` after the attempts of a batch (run_outcomes), in their order: a
    success clears it, a failed attempt that used a try starts it when it is not running (a 429,
    or a send cut off by a shutdown, changes nothing)."""
    cleared: set[str] = set()
    started: dict[str, float] = {}  # hook: when its run of failures began, in this batch
    for o, now in outcomes:
        if not o.hook_id or o.attempt is None:
            continue
        if o.status == "succeeded":
            cleared.add(o.hook_id)
            started.pop(o.hook_id, None)
        elif o.uses_attempt and o.hook_id not in started:
            started[o.hook_id] = float(now)
    # Cleared, then failing again within the batch: the run starts at that failure.
    return FailingChanges(
        cleared=sorted(cleared - started.keys()),
        restarted=[(h, started[h]) for h in sorted(h for h in started if h in cleared)],
        fresh=[(h, started[h]) for h in sorted(h for h in started if h not in cleared)],
    )


async def note_attempts(c: Any, changes: FailingChanges, *, cleared: bool = True) -> None:
    """Write `changes`: one statement per kind of change for the whole batch, hooks in one order;
    a success of a hook that was not failing locks and writes nothing. `cleared=False`: the
    caller cleared them already (in the outcome's statement)."""
    if cleared and changes.cleared:
        await c.execute(CLEAR_FAILING_SQL, changes.cleared)
    if changes.restarted:
        await c.execute(_RESTART_SQL, [h for h, _ in changes.restarted], [t for _, t in changes.restarted])
    if changes.fresh:
        await c.execute(_START_SQL, [h for h, _ in changes.fresh], [t for _, t in changes.fresh])


class OperationalQueries:
    db: Database

    async def disable_failing_hook(
        self, tenant_id: str, hook_id: str, *, failing_before: float, reason: str, now: float
    ) -> bool:
        """Disable the hook with `reason` if it is enabled, its run of failed attempts began at or
        before `failing_before`, and it was not edited (re-enabled, say) since then. Its pending
        deliveries are parked as for any disable. True when this call disabled it."""
        if has_nul(tenant_id, hook_id):
            return False
        now, failing_before = float(now), float(failing_before)

        async def op(c: Any) -> bool:
            done = await c.fetchval(
                "UPDATE hooks SET enabled = false, disabled_reason = $1, updated_at = $2"
                " WHERE tenant_id = $3 AND id = $4 AND enabled AND failing_since IS NOT NULL"
                " AND failing_since <= $5 AND updated_at <= $5 RETURNING true",
                reason, now, tenant_id, hook_id, failing_before,
            )
            if not done:
                return False
            # As an edit that disables the hook (gateway/store/postgres/hooks.py update_hook).
            await c.execute(lanes.PARK_HOOK_SQL, PARKED_AT, hook_id, now)
            return True

        return await self.db.write(op)

    async def start_pause(self, tenant_id: str, destination: str, until: float) -> bool:
        """Pause the destination until `until` (a longer pause already there stays); True when
        this began a pause, False when it lengthened (or left) one already recorded."""
        until = float(until)

        async def op(c: Any) -> bool:
            # The row may be removed (`end_pauses`) between the two statements: then again.
            for _ in range(3):
                began = await c.fetchval(
                    "INSERT INTO destination_pauses (tenant_id, destination, until) VALUES ($1, $2, $3)"
                    " ON CONFLICT (tenant_id, destination) DO NOTHING RETURNING true",
                    tenant_id, destination, until,
                )
                if began:
                    return True
                lengthened = await c.fetchval(
                    "UPDATE destination_pauses SET until = GREATEST(until, $3)"
                    " WHERE tenant_id = $1 AND destination = $2 RETURNING true",
                    tenant_id, destination, until,
                )
                if lengthened:
                    return False
            return False

        return await self.db.write(op)

    async def end_pauses(self, now: float) -> list[Pause]:
        """Remove the pauses that have run out and return them: each to one caller only."""
        now = float(now)

        async def ended(c: Any) -> bool:
            return bool(await c.fetchval(
                "SELECT EXISTS (SELECT 1 FROM destination_pauses WHERE until <= $1)", now))

        async def op(c: Any) -> list[Pause]:
            rows = await c.fetch(
                "DELETE FROM destination_pauses WHERE until <= $1"
                " RETURNING tenant_id, destination, until", now,
            )
            return [Pause(r[0], r[1], float(r[2])) for r in rows]

        if not await self.db.read(ended):  # the common case: a read, not a write every time
            return []
        return await self.db.write(op)
