"""Events, deliveries and attempts on PostgreSQL: ingest, claims and leases, outcomes, records.

Ingests and outcomes come in crowds: concurrent calls share a transaction (`GroupCommit`; what a
batch does is in gateway/store/postgres/batches.py). Rows several transactions may change at
once are locked in one order (delivery ids sorted) to keep deadlocks rare; one that happens
anyway is run again (gateway/store/postgres/database.py)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...errors import BadRequest, Conflict, NotFound, TooManyRequests, shown
from ..models import PARKED_AT, Attempt, Claimed, Delivery, Outcome, Page, SyncRecord
from ..purging import paced
from . import lanes
from .batches import (
    INSERT_DELIVERIES,
    INSERT_EVENTS,
    Ingest,
    Outcomes,
    ingests_are_one_statement,
    outcomes_are_one_statement,
    run_ingests,
    run_outcomes,
)
from .database import Database, GroupCommit, clean
from .rows import (
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    PURGE_BATCH,
    Where,
    attempt_values,
    delivery_by_id,
    delivery_from_row,
    has_nul,
    lock_tenant,
    page,
    require_hook,
)

GROUP_LANES = 4  # group-commit ingest transactions at once
# Outcomes: fewer at once, so that each carries more (a batch costs about the same round trips
# and statements whatever its size).
OUTCOME_LANES = 2


class DeliveryQueries:
    """Events, deliveries, attempts, destination pauses and purging."""

    db: Database
    _ingests: GroupCommit[Ingest, str | None]
    _outcomes: GroupCommit[Outcomes, None]

    def _group_commits(self) -> None:
        self._recheck_later: set[str] = set()
        # A batch that is one statement runs as its own transaction (no BEGIN and COMMIT).
        self._ingests = GroupCommit(self.db, run_ingests, lanes=GROUP_LANES, single=ingests_are_one_statement)
        self._outcomes = GroupCommit(
            self.db, run_outcomes, lanes=OUTCOME_LANES, single=outcomes_are_one_statement
        )

    # -- events and deliveries -------------------------------------------------------------

    async def ingest(
        self,
        *,
        tenant_id: str,
        trigger_id: str,
        event_id: str,
        body: bytes,
        deliveries: Sequence[tuple[str, str]],
        kind: str,
        now: float,
        idempotency_key: str | None = None,
        idempotency_ttl_s: float = 86400.0,
        response: str | None = None,
        status: str = "pending",
        traceparent: str | None = None,
    ) -> str | None:
        """Store an event and one delivery per (delivery id, hook id), atomically.

        With an idempotency key already used (and not expired) by the tenant, stores nothing
        and returns the first request's stored response (`Conflict` when that request was for
        another point, or with another body); otherwise returns None. `traceparent` is kept
        with the event."""
        return await self._ingests.submit(
            Ingest(tenant_id, trigger_id, event_id, body, deliveries, kind, float(now), idempotency_key,
                    float(idempotency_ttl_s), response, status, traceparent)
        )

    async def claim_due(
        self, *, now: float, limit: int, lease_s: float, owner: str, tenant_cap: int | None = None,
        recheck: Sequence[str] = (),
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries, shared fairly across hooks, safe with any number of
        instances claiming at once (gateway/store/postgres/lanes.py)."""

        # Lanes an earlier claim could not recheck (another claim held them) are named again.
        names = set(recheck) | self._recheck_later
        self._recheck_later = set()

        async def op(c: Any) -> tuple[list[Claimed], list[str]]:
            return await lanes.claim(c, now=float(now), limit=limit, lease_s=float(lease_s), owner=owner,
                                     tenant_cap=tenant_cap, recheck=sorted(names))

        try:
            claimed, later = await self.db.write(op)
        except BaseException:
            self._recheck_later |= names
            raise
        self._recheck_later.update(later)
        return claimed

    async def next_due(self) -> float | None:
        """When the first hook may send next (None: nothing pending)."""
        return await self.db.read(lanes.next_due)

    async def repair_lanes(self) -> int:
        """Make due the hooks that have pending deliveries but no due time; returns how many."""
        return await self.db.write(lanes.repair)

    async def extend_leases(self, delivery_ids: Sequence[str], until: float, *, owner: str) -> None:
        """Push the lease of deliveries still held by `owner` (and pending) out to `until`."""

        async def op(c: Any) -> None:
            await c.execute(
                "UPDATE delivery_queue SET due = $1 WHERE delivery_id = ANY($2::text[]) AND lease_owner = $3",
                float(until), sorted(delivery_ids), owner,
            )

        if delivery_ids:
            await self.db.write(op)

    async def record_outcomes(
        self, outcomes: Sequence[Outcome], now: float, *, owner: str | None = None
    ) -> None:
        """Record attempts and move deliveries on. With `owner`, only rows still leased by it
        (or leased by nobody) change state: a worker whose lease was taken over, or whose
        delivery was cancelled meanwhile, moves nothing on. The attempt it made is still
        recorded, numbered after the delivery's last recorded attempt."""
        if outcomes:
            await self._outcomes.submit((outcomes, float(now), owner))

    async def record_sync(self, records: Sequence[SyncRecord]) -> None:
        """Record blocking invocations, many in one write: events, deliveries and attempts."""

        async def op(c: Any) -> None:
            await c.execute(
                INSERT_EVENTS,
                [r.event_id for r in records],
                [r.tenant_id for r in records],
                [r.trigger_id for r in records],
                [r.body for r in records],
                [float(r.created_at) for r in records],
            )
            rows = [(r, row) for r in records for row in r.rows]
            await c.execute(
                INSERT_DELIVERIES,
                [row.delivery_id for _, row in rows], [r.tenant_id for r, _ in rows],
                [r.event_id for r, _ in rows], [row.hook_id for _, row in rows],
                [r.trigger_id for r, _ in rows], ["sync"] * len(rows), [row.status for _, row in rows],
                [len(row.attempts) for _, row in rows], [None] * len(rows),
                [clean(row.last_error) for _, row in rows], [float(r.created_at) for r, _ in rows],
            )
            attempts = [
                (row.delivery_id, i + 1, *attempt_values(a))
                for _, row in rows
                for i, a in enumerate(row.attempts)
            ]
            if attempts:
                await c.executemany(
                    f"INSERT INTO attempts ({ATTEMPT_COLUMNS})"  # noqa: S608
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    attempts,
                )

        if records:
            await self.db.write(op)

    async def defer(self, delivery_ids: Sequence[str], until: float, now: float) -> None:
        """Push deliveries back without using an attempt (destination paused, hook at its cap)."""

        async def op(c: Any) -> None:
            # The record first, then the queue row (the order every writer of both keeps).
            await c.execute(
                "WITH d AS (UPDATE deliveries SET next_attempt_at = $1, updated_at = $2"
                " WHERE id = ANY($3::text[]) AND status = 'pending' RETURNING id)"
                " UPDATE delivery_queue SET due = $1, lease_owner = NULL"
                " WHERE delivery_id IN (SELECT id FROM d)",
                float(until), float(now), sorted(delivery_ids),
            )
            await lanes.wake_deliveries(c, delivery_ids, until)

        if delivery_ids:
            await self.db.write(op)

    async def release(self, delivery_ids: Sequence[str], now: float, *, owner: str | None = None) -> None:
        """Give claimed deliveries back at once (clean shutdown). With `owner`, only rows that
        owner still leases: a delivery whose outcome was recorded keeps its due time."""

        async def op(c: Any) -> None:
            ids = sorted(delivery_ids)
            await c.execute("SELECT 1 FROM deliveries WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", ids)
            await c.execute(
                "WITH q AS (UPDATE delivery_queue SET due = $1, lease_owner = NULL"
                " WHERE delivery_id = ANY($2::text[]) AND ($3::text IS NULL OR lease_owner = $3)"
                " RETURNING delivery_id)"
                " UPDATE deliveries SET next_attempt_at = $1, updated_at = $1"
                " WHERE id IN (SELECT delivery_id FROM q) AND status = 'pending'",
                float(now), ids, owner,
            )
            await lanes.wake_deliveries(c, delivery_ids, now)

        if delivery_ids:
            await self.db.write(op)

    async def list_deliveries(
        self,
        tenant_id: str,
        *,
        hook_id: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page:
        if has_nul(tenant_id, hook_id, status):
            return Page([], 0)
        where = Where()
        where.add("tenant_id = {}", tenant_id)
        for cond, value in (
            ("hook_id = {}", hook_id),
            ("status = {}", status),
            ("created_at >= {}::float8", since),
            ("created_at < {}::float8", until),
        ):
            if value is not None:
                where.add(cond, float(value) if isinstance(value, int | float) else value)

        async def op(c: Any) -> Page:
            return await page(c, columns=DELIVERY_COLUMNS, table="deliveries", where=where,
                              order="created_at DESC, id DESC", offset=offset, limit=limit,
                              row=delivery_from_row)

        return await self.db.read(op)

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> tuple[Delivery, list[Attempt]] | None:
        async def op(c: Any) -> tuple[Delivery, list[Attempt]] | None:
            if has_nul(tenant_id, delivery_id):
                return None
            # One snapshot: an outcome records its attempt and moves the delivery on in one
            # transaction, and the two reads see both or neither.
            async with c.transaction(isolation="repeatable_read", readonly=True):
                row = await c.fetchrow(
                    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND id = $2",  # noqa: S608
                    tenant_id,
                    delivery_id,
                )
                if row is None:
                    return None
                attempts = [
                    Attempt(*r)
                    for r in await c.fetch(
                        "SELECT number, started_at, duration_ms, status_code, error, response_body, rl_limit,"
                        " rl_remaining, rl_reset, retry_after FROM attempts WHERE delivery_id = $1"
                        " ORDER BY number",
                        delivery_id,
                    )
                ]
            return delivery_from_row(row), attempts

        return await self.db.read(op)

    async def retry_delivery(self, tenant_id: str, delivery_id: str, now: float) -> Delivery:
        """Make a delivery due now again (a failed or cancelled one becomes pending); `Conflict`
        if another delivery of its event to its hook is pending (a replay made one)."""
        now = float(now)

        async def op(c: Any) -> Delivery:
            if has_nul(tenant_id, delivery_id):
                raise NotFound(f"delivery {shown(delivery_id)} not found")
            row = await c.fetchrow(
                "SELECT d.kind, h.id, h.enabled, d.status, q.lease_owner, q.due, d.event_id"
                " FROM deliveries d LEFT JOIN hooks h ON h.id = d.hook_id"
                " LEFT JOIN delivery_queue q ON q.delivery_id = d.id"
                " WHERE d.tenant_id = $1 AND d.id = $2 FOR UPDATE OF d",
                tenant_id,
                delivery_id,
            )
            if row is None:
                raise NotFound(f"delivery {shown(delivery_id)} not found")
            if row[0] != "async":
                raise BadRequest("only deliveries of asynchronous points can be retried")
            if row[1] is None:
                raise Conflict("the hook of this delivery was deleted")
            if row[3] == "pending" and row[4] is not None and (row[5] or 0) > now:
                # Being attempted right now: a second, concurrent send would help nobody.
                return await delivery_by_id(c, delivery_id)
            if row[3] != "pending":  # as for replay: never a second pending delivery of an event to a hook
                # The hook's row, locked, is what a concurrent replay of it waits for.
                await c.execute("SELECT 1 FROM hooks WHERE id = $1 FOR NO KEY UPDATE", row[1])
                other = await c.fetchval(
                    "SELECT id FROM deliveries WHERE event_id = $1 AND hook_id = $2 AND kind = 'async'"
                    " AND status = 'pending' AND id != $3 LIMIT 1",
                    row[6],
                    row[1],
                    delivery_id,
                )
                if other is not None:
                    raise Conflict(f"delivery {other} of the same event to this hook is pending already")
            due = now if row[2] else PARKED_AT
            await c.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $2"
                " WHERE id = $3",
                due,
                now,
                delivery_id,
            )
            await c.execute(
                "INSERT INTO delivery_queue (delivery_id, hook_id, tenant_id, due, seq)"
                " SELECT id, hook_id, tenant_id, $1, seq FROM deliveries WHERE id = $2"
                " ON CONFLICT (delivery_id) DO UPDATE SET due = EXCLUDED.due, lease_owner = NULL",
                due,
                delivery_id,
            )
            await lanes.wake_deliveries(c, [delivery_id], due)
            return await delivery_by_id(c, delivery_id)

        return await self.db.write(op)

    async def replay(
        self,
        tenant_id: str,
        hook_id: str,
        *,
        since: float,
        until: float,
        statuses: Iterable[str],
        new_id: Callable[[], str],
        limit: int,
        now: float,
        per_hour: int | None = None,
    ) -> tuple[list[str], int]:
        """At most `limit` new deliveries to the hook for its events in [since, until) whose
        last finished delivery to it (or, with none finished, last delivery) has one of
        `statuses`. An event with a pending delivery to the hook gets no second one: it is
        skipped. Returns (the new delivery ids, how many events were skipped).

        With `per_hour`, the tenant's replays of the last hour are counted, and this one
        recorded, under a lock of the tenant's row: past it, `TooManyRequests` whose
        `retry_after` is the seconds until enough of them have left the hour. The hook's row is
        locked too, so two replays of one hook (on any instances) cannot both queue an event."""
        status_list = list(statuses)
        hour = 3600.0
        now = float(now)

        async def check_quota(c: Any, per_hour: int) -> None:
            await c.execute(
                "DELETE FROM replays WHERE tenant_id = $1 AND created_at <= $2", tenant_id, now - hour
            )
            count = int(await c.fetchval("SELECT COUNT(*) FROM replays WHERE tenant_id = $1", tenant_id))
            if count >= per_hour:
                # The one whose leaving brings the count under the quota (the oldest, unless
                # the quota was lowered meanwhile).
                freed_at = await c.fetchval(
                    "SELECT created_at FROM replays WHERE tenant_id = $1"
                    " ORDER BY created_at LIMIT 1 OFFSET $2",
                    tenant_id,
                    count - per_hour,
                )
                wait = max(1, math.ceil(freed_at + hour - now))
                raise TooManyRequests(
                    f"quota 'replaysPerHour' is {per_hour}: try again in {wait} s", retry_after=wait
                )
            await c.execute(
                "INSERT INTO replays (tenant_id, hook_id, created_at) VALUES ($1, $2, $3)",
                tenant_id,
                hook_id,
                now,
            )

        async def op(c: Any) -> tuple[list[str], int]:
            if per_hour is not None:
                await lock_tenant(c, tenant_id)  # the tenant before the hook, as everywhere
            hook = await require_hook(c, tenant_id, hook_id, lock=True)
            if per_hour is not None:
                await check_quota(c, per_hour)
            # Per event of the window: whether the hook has a pending delivery of it, and the
            # status of its latest finished one (by insertion order), oldest event first.
            rows = await c.fetch(
                "SELECT d.event_id, bool_or(d.status = 'pending'),"
                " (SELECT x.status FROM deliveries x WHERE x.event_id = d.event_id AND x.hook_id = $2"
                "  AND x.kind = 'async' AND x.status != 'pending' ORDER BY x.seq DESC LIMIT 1)"
                " FROM deliveries d JOIN events e ON e.id = d.event_id"
                " WHERE d.tenant_id = $1 AND d.hook_id = $2 AND d.kind = 'async'"
                " AND e.created_at >= $3 AND e.created_at < $4"
                " GROUP BY d.event_id, e.created_at ORDER BY e.created_at, d.event_id",
                tenant_id,
                hook_id,
                float(since),
                float(until),
            )
            due = now if hook[1] else PARKED_AT
            created: list[str] = []
            skipped = 0
            for event_id, has_pending, last_finished in rows:
                if (last_finished or "pending") not in status_list:
                    continue
                if has_pending:  # never a second pending delivery of one event to one hook
                    skipped += 1
                    continue
                if len(created) >= limit:  # the caller's cap on one replay
                    continue
                created.append(event_id)
            ids = [new_id() for _ in created]
            if ids:
                n = len(ids)
                await c.execute(
                    INSERT_DELIVERIES,
                    ids, [tenant_id] * n, created, [hook_id] * n, [hook[2]] * n, ["async"] * n,
                    ["pending"] * n, [0] * n, [due] * n, [None] * n, [now] * n,
                )  # their queue rows and their lane's wake with them
            return ids, skipped

        return await self.db.write(op)

    async def get_pause(self, tenant_id: str, destination: str, now: float) -> float | None:
        async def op(c: Any) -> float | None:
            if has_nul(tenant_id, destination):
                return None
            value = await c.fetchval(
                "SELECT until FROM destination_pauses"
                " WHERE tenant_id = $1 AND destination = $2 AND until > $3",
                tenant_id,
                destination,
                float(now),
            )
            return float(value) if value is not None else None

        return await self.db.read(op)

    async def set_pause(self, tenant_id: str, destination: str, until: float) -> None:
        async def op(c: Any) -> None:
            await c.execute(
                "INSERT INTO destination_pauses (tenant_id, destination, until) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant_id, destination)"
                " DO UPDATE SET until = GREATEST(destination_pauses.until, EXCLUDED.until)",
                tenant_id,
                destination,
                float(until),
            )

        await self.db.write(op)

    async def purge(self, *, before: float, now: float, batch: int = PURGE_BATCH) -> int:
        """Delete finished deliveries, their attempts and events older than `before`, and expired
        idempotency keys (ended pauses are removed by `end_pauses`, which announces each). Pending
        deliveries and their events are kept. Works in transactions of at most `batch` deliveries
        (and `batch` events), so the hot tables are never locked for long and concurrent ingests
        keep committing."""
        before, now = float(before), float(now)

        async def deliveries(c: Any) -> int:
            done = [
                r[0]
                for r in await c.fetch(
                    # The outer conditions are checked again on a row another transaction changed
                    # meanwhile (a retry made it pending): it is kept.
                    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
                    " WHERE created_at < $1 AND status != 'pending' LIMIT $2)"
                    " AND created_at < $1 AND status != 'pending' RETURNING id",
                    before,
                    batch,
                )
            ]
            if done:
                await c.execute("DELETE FROM attempts WHERE delivery_id = ANY($1::text[])", done)
            return len(done)

        async def events(c: Any) -> int:
            status = await c.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE created_at < $1 AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.event_id = events.id) LIMIT $2)"
                " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
                before,
                batch,
            )
            tail = status.rsplit(" ", 1)[-1]
            return int(tail) if tail.isdigit() else 0

        async def rest(c: Any) -> None:
            await c.execute("DELETE FROM idempotency_keys WHERE expires_at <= $1", now)
            await c.execute(
                "DELETE FROM signing_secrets WHERE expires_at IS NOT NULL AND expires_at <= $1", now
            )

        removed = 0
        while True:
            count = await paced(self.db.write(deliveries))
            removed += count
            if count < batch:
                break
        while await paced(self.db.write(events)) >= batch:
            pass
        await self.db.write(rest)
        return removed

    async def backlog(self) -> int:
        async def op(c: Any) -> int:
            return int(await c.fetchval("SELECT COUNT(*) FROM delivery_queue"))

        return await self.db.read(op)
