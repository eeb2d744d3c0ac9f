"""Events, deliveries and attempts on SQLite: ingest, claims and leases, outcomes, records."""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...errors import BadRequest, Conflict, NotFound, TooManyRequests, shown
from ..database import Database
from ..models import (
    PARKED_AT,
    Attempt,
    Claimed,
    Delivery,
    Outcome,
    Page,
    SyncRecord,
)
from ..purging import paced
from . import lanes, operational
from .rows import (
    DELIVERY_COLUMNS,
    PURGE_BATCH,
    attempt_values,
    delivery_by_id,
    delivery_from_row,
    page,
    require_hook,
)


class DeliveryQueries:
    """Events, deliveries, attempts, destination pauses and purging."""

    db: Database

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
        another point); otherwise returns None. `traceparent` is kept with the event.
        """

        def op(c: sqlite3.Connection) -> str | None:
            if idempotency_key is not None:
                digest = hashlib.sha256(body).hexdigest()
                row = c.execute(
                    "SELECT response, trigger_id, request_hash FROM idempotency_keys"
                    " WHERE tenant_id = ? AND key = ? AND expires_at > ?",
                    (tenant_id, idempotency_key, now),
                ).fetchone()
                if row:
                    if row[1] != trigger_id:
                        raise Conflict(f"this Idempotency-Key was used for an event of {row[1]!r}")
                    if row[2] is not None and row[2] != digest:
                        raise Conflict("this Idempotency-Key was used with a different request body")
                    return str(row[0])
                c.execute(
                    "INSERT OR REPLACE INTO idempotency_keys"
                    " (tenant_id, key, trigger_id, response, created_at, expires_at, request_hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        tenant_id,
                        idempotency_key,
                        trigger_id,
                        response or "",
                        now,
                        now + idempotency_ttl_s,
                        digest,
                    ),
                )
            c.execute(
                "INSERT INTO events (id, tenant_id, trigger_id, body, created_at, traceparent)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, tenant_id, trigger_id, body, now, traceparent),
            )
            c.executemany(
                f"INSERT INTO deliveries ({DELIVERY_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, NULL, ?, ?)",
                [
                    (
                        did,
                        tenant_id,
                        event_id,
                        hid,
                        trigger_id,
                        kind,
                        status,
                        now if status == "pending" else None,
                        now,
                        now,
                    )
                    for did, hid in deliveries
                ],
            )
            if status == "pending":
                lanes.wake(c, (hid for _, hid in deliveries), now)
            return None

        return await self.db.write(op)

    async def claim_due(
        self, *, now: float, limit: int, lease_s: float, owner: str, tenant_cap: int | None = None,
        recheck: Sequence[str] = (),
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries, shared fairly across hooks (gateway/store/sqlite/lanes.py).

        The lease moves `next_attempt_at` to the lease expiry, so a claimed row is out of the
        due range (no other worker takes it) and comes back by itself if its worker dies.
        """

        def op(c: sqlite3.Connection) -> list[Claimed]:
            return lanes.claim(c, now=now, limit=limit, lease_s=lease_s, owner=owner, tenant_cap=tenant_cap,
                               recheck=recheck)

        return await self.db.write(op)

    async def next_due(self) -> float | None:
        """When the first hook may send next (None: nothing pending)."""
        return await self.db.read(lanes.next_due)

    async def repair_lanes(self) -> int:
        """Make due the hooks that have pending deliveries but no due time; returns how many."""
        return await self.db.write(lanes.repair)

    async def extend_leases(self, delivery_ids: Sequence[str], until: float, *, owner: str) -> None:
        """Push the lease of deliveries still held by `owner` (and pending) out to `until`."""

        def op(c: sqlite3.Connection) -> None:
            c.executemany(
                "UPDATE deliveries SET next_attempt_at = ?"
                " WHERE id = ? AND status = 'pending' AND lease_owner = ?",
                [(until, d, owner) for d in delivery_ids],
            )

        await self.db.write(op)

    async def record_outcomes(
        self, outcomes: Sequence[Outcome], now: float, *, owner: str | None = None
    ) -> None:
        """Record attempts and move deliveries on. With `owner`, only rows still leased by it
        (or leased by nobody) change state: a worker whose lease was taken over, or whose
        delivery was cancelled meanwhile, moves nothing on. The attempt it made is still
        recorded, numbered after the delivery's last recorded attempt."""

        def op(c: sqlite3.Connection) -> None:
            cond = "id = ?6 AND status = 'pending'" + (
                " AND (lease_owner = ?8 OR lease_owner IS NULL)" if owner is not None else ""
            )
            # A delivery is parked (`PARKED_AT`) only while its hook is disabled in the database:
            # the worker's view of the hook may be older than an enable (made just now, or on
            # another instance), and a parked delivery of an enabled hook would wait forever.
            sql = (
                "UPDATE deliveries SET status = ?1, next_attempt_at = CASE WHEN ?2 >= ?7 AND EXISTS"  # noqa: S608
                " (SELECT 1 FROM hooks h WHERE h.id = deliveries.hook_id AND h.enabled = 1)"
                " THEN ?5 ELSE ?2 END,"
                " attempt_count = attempt_count + ?3, last_error = COALESCE(?4, last_error),"
                f" lease_owner = NULL, updated_at = ?5 WHERE {cond}"
            )
            for o in outcomes:
                args: tuple[Any, ...] = (
                    o.status, o.next_attempt_at, 1 if o.uses_attempt else 0, o.last_error, now, o.delivery_id,
                    PARKED_AT,
                )
                c.execute(sql, args if owner is None else (*args, owner))
                lanes.after_outcome(c, o, now)
                operational.note_attempt(c, o, now)  # the hook's run of failures (auto-disable)
                if o.next_attempt_at is not None and o.next_attempt_at >= PARKED_AT:
                    lanes.wake_deliveries(c, [o.delivery_id], now)  # due now unless it was parked
                if o.attempt is None:
                    continue
                a = o.attempt
                # One statement: numbered after the last recorded attempt, and only while the
                # delivery exists (it may have been purged meanwhile).
                c.execute(
                    "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,"
                    " response_body, rl_limit, rl_remaining, rl_reset, retry_after)"
                    " SELECT ?1, COALESCE((SELECT MAX(number) FROM attempts WHERE delivery_id = ?1), 0) + 1,"
                    " ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10"
                    " WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = ?1)",
                    (o.delivery_id, *attempt_values(a)),
                )

        await self.db.write(op)

    async def record_sync(self, records: Sequence[SyncRecord]) -> None:
        """Record blocking invocations, many in one write: events, deliveries and attempts."""

        def op(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT INTO events (id, tenant_id, trigger_id, body, created_at) VALUES (?, ?, ?, ?, ?)",
                [(r.event_id, r.tenant_id, r.trigger_id, r.body, r.created_at) for r in records],
            )
            c.executemany(
                f"INSERT INTO deliveries ({DELIVERY_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, 'sync', ?, ?, NULL, ?, ?, ?)",
                [
                    (
                        row.delivery_id,
                        r.tenant_id,
                        r.event_id,
                        row.hook_id,
                        r.trigger_id,
                        row.status,
                        len(row.attempts),
                        row.last_error,
                        r.created_at,
                        r.created_at,
                    )
                    for r in records
                    for row in r.rows
                ],
            )
            c.executemany(
                "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,"
                " response_body, rl_limit, rl_remaining, rl_reset, retry_after)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (row.delivery_id, i + 1, *attempt_values(a))
                    for r in records
                    for row in r.rows
                    for i, a in enumerate(row.attempts)
                ],
            )

        await self.db.write(op)

    async def defer(self, delivery_ids: Sequence[str], until: float, now: float) -> None:
        """Push deliveries back without using an attempt (destination paused, hook at its cap)."""

        def op(c: sqlite3.Connection) -> None:
            c.executemany(
                "UPDATE deliveries SET next_attempt_at = ?, lease_owner = NULL, updated_at = ?"
                " WHERE id = ? AND status = 'pending'",
                [(until, now, d) for d in delivery_ids],
            )
            lanes.wake_deliveries(c, delivery_ids, until)

        await self.db.write(op)

    async def release(self, delivery_ids: Sequence[str], now: float, *, owner: str | None = None) -> None:
        """Give claimed deliveries back at once (clean shutdown). With `owner`, only rows that
        owner still leases: a delivery whose outcome was recorded keeps its due time."""

        def op(c: sqlite3.Connection) -> None:
            cond = "id = ? AND status = 'pending'" + (" AND lease_owner = ?" if owner is not None else "")
            c.executemany(
                f"UPDATE deliveries SET next_attempt_at = ?, lease_owner = NULL, updated_at = ? WHERE {cond}",  # noqa: S608
                [(now, now, d, owner) if owner is not None else (now, now, d) for d in delivery_ids],
            )
            lanes.wake_deliveries(c, delivery_ids, now)

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
        where: list[str] = ["tenant_id = ?"]
        args: list[Any] = [tenant_id]
        for cond, value in (
            ("hook_id = ?", hook_id),
            ("status = ?", status),
            ("created_at >= ?", since),
            ("created_at < ?", until),
        ):
            if value is not None:
                where.append(cond)
                args.append(value)

        def op(c: sqlite3.Connection) -> Page:
            return page(
                c,
                columns=DELIVERY_COLUMNS,
                table="deliveries",
                where=where,
                args=args,
                order="created_at DESC, id DESC",
                offset=offset,
                limit=limit,
                row=delivery_from_row,
            )

        return await self.db.read(op)

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> tuple[Delivery, list[Attempt]] | None:
        def op(c: sqlite3.Connection) -> tuple[Delivery, list[Attempt]] | None:
            row = c.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = ? AND id = ?",  # noqa: S608
                (tenant_id, delivery_id),
            ).fetchone()
            if row is None:
                return None
            attempts = [
                Attempt(*r)
                for r in c.execute(
                    "SELECT number, started_at, duration_ms, status_code, error, response_body, rl_limit,"
                    " rl_remaining, rl_reset, retry_after FROM attempts WHERE delivery_id = ?"
                    " ORDER BY number",
                    (delivery_id,),
                )
            ]
            return delivery_from_row(row), attempts

        return await self.db.read(op)

    async def retry_delivery(self, tenant_id: str, delivery_id: str, now: float) -> Delivery:
        """Make a delivery due now again (a failed or cancelled one becomes pending); `Conflict`
        if another delivery of its event to its hook is pending (a replay made one)."""

        def op(c: sqlite3.Connection) -> Delivery:
            row = c.execute(
                "SELECT d.kind, h.id, h.enabled, d.status, d.lease_owner, d.next_attempt_at, d.event_id"
                " FROM deliveries d LEFT JOIN hooks h ON h.id = d.hook_id WHERE d.tenant_id = ? AND d.id = ?",
                (tenant_id, delivery_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"delivery {shown(delivery_id)} not found")
            if row[0] != "async":
                raise BadRequest("only deliveries of asynchronous points can be retried")
            if row[1] is None:
                raise Conflict("the hook of this delivery was deleted")
            if row[3] == "pending" and row[4] is not None and (row[5] or 0) > now:
                # Being attempted right now: a second, concurrent send would help nobody.
                return delivery_by_id(c, delivery_id)
            if row[3] != "pending":  # as for replay: never a second pending delivery of an event to a hook
                other = c.execute(
                    "SELECT id FROM deliveries WHERE event_id = ? AND hook_id = ? AND kind = 'async'"
                    " AND status = 'pending' AND id != ? LIMIT 1",
                    (row[6], row[1], delivery_id),
                ).fetchone()
                if other is not None:
                    raise Conflict(f"delivery {other[0]} of the same event to this hook is pending already")
            due = now if row[2] else PARKED_AT
            c.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, lease_owner = NULL,"
                " updated_at = ?, created_at = created_at WHERE id = ?",
                (due, now, delivery_id),
            )
            lanes.wake_deliveries(c, [delivery_id], due)
            return delivery_by_id(c, delivery_id)

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
        recorded, in the same transaction: past it, `TooManyRequests` whose `retry_after` is
        the seconds until enough of them have left the hour."""
        status_list = list(statuses)
        hour = 3600.0

        def check_quota(c: sqlite3.Connection, per_hour: int) -> None:
            c.execute("DELETE FROM replays WHERE tenant_id = ? AND created_at <= ?", (tenant_id, now - hour))
            count = c.execute("SELECT COUNT(*) FROM replays WHERE tenant_id = ?", (tenant_id,)).fetchone()[0]
            if count >= per_hour:
                # The one whose leaving brings the count under the quota (the oldest, unless
                # the quota was lowered meanwhile).
                (freed_at,) = c.execute(
                    "SELECT created_at FROM replays WHERE tenant_id = ? ORDER BY created_at LIMIT 1 OFFSET ?",
                    (tenant_id, count - per_hour),
                ).fetchone()
                wait = max(1, math.ceil(freed_at + hour - now))
                raise TooManyRequests(
                    f"quota 'replaysPerHour' is {per_hour}: try again in {wait} s", retry_after=wait
                )
            c.execute(
                "INSERT INTO replays (tenant_id, hook_id, created_at) VALUES (?, ?, ?)",
                (tenant_id, hook_id, now),
            )

        def op(c: sqlite3.Connection) -> tuple[list[str], int]:
            hook = require_hook(c, tenant_id, hook_id)
            if per_hour is not None:
                check_quota(c, per_hour)
            # Per event of the window: whether the hook has a pending delivery of it, and the
            # status of its latest finished one (by rowid: the last inserted), oldest event first.
            rows = c.execute(
                "SELECT d.event_id, MAX(d.status = 'pending'),"
                " (SELECT x.status FROM deliveries x WHERE x.event_id = d.event_id AND x.hook_id = ?2"
                "  AND x.kind = 'async' AND x.status != 'pending' ORDER BY x.rowid DESC LIMIT 1)"
                " FROM deliveries d JOIN events e ON e.id = d.event_id"
                " WHERE d.tenant_id = ?1 AND d.hook_id = ?2 AND d.kind = 'async'"
                " AND e.created_at >= ?3 AND e.created_at < ?4"
                " GROUP BY d.event_id ORDER BY e.created_at, d.event_id",
                (tenant_id, hook_id, since, until),
            ).fetchall()
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
                did = new_id()
                c.execute(
                    f"INSERT INTO deliveries ({DELIVERY_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, 'async', 'pending', 0, ?, NULL, ?, ?)",
                    (did, tenant_id, event_id, hook_id, hook[2], due, now, now),
                )
                created.append(did)
            if created:
                lanes.wake(c, [hook_id], due)
            return created, skipped

        return await self.db.write(op)

    async def get_pause(self, tenant_id: str, destination: str, now: float) -> float | None:
        def op(c: sqlite3.Connection) -> float | None:
            row = c.execute(
                "SELECT until FROM destination_pauses WHERE tenant_id = ? AND destination = ? AND until > ?",
                (tenant_id, destination, now),
            ).fetchone()
            return float(row[0]) if row else None

        return await self.db.read(op)

    async def set_pause(self, tenant_id: str, destination: str, until: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO destination_pauses (tenant_id, destination, until) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant_id, destination) DO UPDATE SET until = MAX(until, excluded.until)",
                (tenant_id, destination, until),
            )

        await self.db.write(op)

    async def purge(self, *, before: float, now: float, batch: int = PURGE_BATCH) -> int:
        """Delete finished deliveries, their attempts and events older than `before`, and expired
        idempotency keys (ended pauses are removed by `end_pauses`, which announces each). Pending
        deliveries and their events are kept. Works in transactions of at most `batch` deliveries
        (and `batch` events): SQLite has one writer, so each is short and the ingests waiting
        behind it keep committing (scenario 7)."""

        def deliveries(c: sqlite3.Connection) -> int:
            done = c.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
                " WHERE created_at < ? AND status != 'pending' LIMIT ?) RETURNING id",
                (before, batch),
            ).fetchall()
            c.executemany("DELETE FROM attempts WHERE delivery_id = ?", done)
            return len(done)

        def events(c: sqlite3.Connection) -> int:
            return c.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE created_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.event_id = events.id) LIMIT ?)",
                (before, batch),
            ).rowcount

        def rest(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))
            c.execute("DELETE FROM signing_secrets WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))

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
        def op(c: sqlite3.Connection) -> int:
            return int(c.execute("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").fetchone()[0])

        return await self.db.read(op)
