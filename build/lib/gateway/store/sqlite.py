"""The SQLite store: every query of the gateway, each scoped to its tenant."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import BadRequest, Conflict, NotFound
from .database import Database, sqlite_path
from .models import (
    Attempt,
    Claimed,
    Delivery,
    Hook,
    HookMaterial,
    Outcome,
    Page,
    SigningSecret,
    SyncRecord,
    Tenant,
)

MAX_SECRETS_PER_HOOK = 20

_HOOK_COLUMNS = (
    'id, tenant_id, name, trigger_id, url, enabled, "order", timeout_ms, failure_policy, '
    "max_concurrency, rate_limit_per_second, format, disabled_reason, created_at, updated_at"
)
_DELIVERY_COLUMNS = (
    "id, tenant_id, event_id, hook_id, trigger_id, kind, status, attempt_count, next_attempt_at, "
    "last_error, created_at, updated_at"
)
# Hook fields as the API names them -> column.
HOOK_FIELD_COLUMNS = {
    "name": "name",
    "url": "url",
    "enabled": "enabled",
    "order": '"order"',
    "timeoutMs": "timeout_ms",
    "failurePolicy": "failure_policy",
    "maxConcurrency": "max_concurrency",
    "rateLimitPerSecond": "rate_limit_per_second",
    "format": "format",
    "disabledReason": "disabled_reason",
}
# A deferral for deliveries of a disabled hook: they wait until the hook is enabled again.
PARKED_AT = 1e15
PURGE_BATCH = 5000  # finished deliveries deleted per transaction, so ingest is not held up
# Claim: the oldest due pending rows. The query matches the partial index
# `deliveries_due (next_attempt_at) WHERE status = 'pending'`, so it never scans the table.
CLAIM_SQL = (
    "SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?"
    " ORDER BY next_attempt_at LIMIT ?"
)


def _hook(row: Sequence[Any]) -> Hook:
    return Hook(
        id=row[0],
        tenant_id=row[1],
        name=row[2],
        trigger_id=row[3],
        url=row[4],
        enabled=bool(row[5]),
        order=row[6],
        timeout_ms=row[7],
        failure_policy=row[8],
        max_concurrency=row[9],
        rate_limit_per_second=row[10],
        format=row[11],
        disabled_reason=row[12],
        created_at=row[13],
        updated_at=row[14],
    )


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(*row)


def _tenant(row: Sequence[Any]) -> Tenant:
    return Tenant(
        id=row[0],
        name=row[1],
        allowed_cidrs=tuple(json.loads(row[2])),
        deadlines=json.loads(row[3]),
        max_in_flight=row[4],
        created_at=row[5],
        updated_at=row[6],
    )


def _is_unique_violation(exc: sqlite3.IntegrityError) -> bool:
    return "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc)


class SqliteStore:
    """Implements `gateway.store.base.Store` on SQLite."""

    def __init__(self, url: str, *, busy_timeout_s: float = 5.0, synchronous: str = "FULL") -> None:
        self.db = Database(sqlite_path(url), busy_timeout_s=busy_timeout_s, synchronous=synchronous)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.ping()

    # -- tenants ---------------------------------------------------------------------------

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        def op(c: sqlite3.Connection) -> Tenant:
            try:
                c.execute(
                    "INSERT INTO tenants (id, name, allowed_cidrs, deadlines, max_in_flight, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        tenant.id,
                        tenant.name,
                        json.dumps(list(tenant.allowed_cidrs)),
                        json.dumps(tenant.deadlines),
                        tenant.max_in_flight,
                        tenant.created_at,
                        tenant.updated_at,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if _is_unique_violation(exc):
                    raise Conflict(f"tenant {tenant.id!r} already exists") from None
                raise
            return tenant

        return await self.db.write(op)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        def op(c: sqlite3.Connection) -> Tenant | None:
            row = c.execute(
                "SELECT id, name, allowed_cidrs, deadlines, max_in_flight, created_at, updated_at"
                " FROM tenants WHERE id = ?",
                (tenant_id,),
            ).fetchone()
            return _tenant(row) if row else None

        return await self.db.read(op)

    async def list_tenants(self, *, offset: int, limit: int) -> Page:
        def op(c: sqlite3.Connection) -> Page:
            rows = c.execute(
                "SELECT id, name, allowed_cidrs, deadlines, max_in_flight, created_at, updated_at"
                " FROM tenants ORDER BY id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            total = c.execute("SELECT COUNT(*) FROM tenants").fetchone()[0]
            return Page([_tenant(r) for r in rows], total)

        return await self.db.read(op)

    async def update_tenant(self, tenant_id: str, changes: Mapping[str, Any], now: float) -> Tenant:
        columns = {
            "name": "name",
            "allowed_cidrs": "allowed_cidrs",
            "deadlines": "deadlines",
            "max_in_flight": "max_in_flight",
        }

        def op(c: sqlite3.Connection) -> Tenant:
            sets: list[str] = ["updated_at = ?"]
            args: list[Any] = [now]
            for key, value in changes.items():
                sets.append(f"{columns[key]} = ?")
                args.append(
                    json.dumps(list(value) if key == "allowed_cidrs" else value)
                    if key in ("allowed_cidrs", "deadlines")
                    else value
                )
            cur = c.execute(
                f"UPDATE tenants SET {', '.join(sets)} WHERE id = ?",  # noqa: S608 - column names are fixed
                (*args, tenant_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"tenant {tenant_id!r} not found")
            row = c.execute(
                "SELECT id, name, allowed_cidrs, deadlines, max_in_flight, created_at, updated_at"
                " FROM tenants WHERE id = ?",
                (tenant_id,),
            ).fetchone()
            return _tenant(row)

        return await self.db.write(op)

    async def delete_tenant(self, tenant_id: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            cur = c.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,))
            if cur.rowcount == 0:
                raise NotFound(f"tenant {tenant_id!r} not found")
            # Hooks and their secrets go by ON DELETE CASCADE; the rest is removed here, so a
            # tenant created again with the same id starts empty.
            c.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE tenant_id = ?)",
                (tenant_id,),
            )
            for table in ("deliveries", "events", "idempotency_keys", "destination_pauses"):
                c.execute(f"DELETE FROM {table} WHERE tenant_id = ?", (tenant_id,))  # noqa: S608 - fixed names

        await self.db.write(op)

    # -- hooks -----------------------------------------------------------------------------

    async def create_hook(self, hook: Hook, signing_secret: str, *, single_enabled: bool = False) -> Hook:
        """Insert a hook and its first signing secret. With `single_enabled`, an enabled hook is
        refused (409) when another hook of its point is enabled, checked in the same transaction."""

        def op(c: sqlite3.Connection) -> Hook:
            if single_enabled and hook.enabled:
                other = c.execute(
                    "SELECT name FROM hooks WHERE tenant_id = ? AND trigger_id = ? AND enabled = 1",
                    (hook.tenant_id, hook.trigger_id),
                ).fetchone()
                if other:
                    raise Conflict(f"only one {hook.trigger_id} hook can be enabled; {other[0]!r} already is")
            try:
                c.execute(
                    f"INSERT INTO hooks ({_HOOK_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        hook.id,
                        hook.tenant_id,
                        hook.name,
                        hook.trigger_id,
                        hook.url,
                        int(hook.enabled),
                        hook.order,
                        hook.timeout_ms,
                        hook.failure_policy,
                        hook.max_concurrency,
                        hook.rate_limit_per_second,
                        hook.format,
                        hook.disabled_reason,
                        hook.created_at,
                        hook.updated_at,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if _is_unique_violation(exc):
                    raise Conflict(f"a hook named {hook.name!r} already exists") from None
                raise
            c.execute(
                "INSERT INTO signing_secrets (hook_id, value, created_at, expires_at) VALUES (?, ?, ?, NULL)",
                (hook.id, signing_secret, hook.created_at),
            )
            return hook

        return await self.db.write(op)

    async def get_hook(self, tenant_id: str, hook_id: str) -> Hook | None:
        def op(c: sqlite3.Connection) -> Hook | None:
            row = c.execute(
                f"SELECT {_HOOK_COLUMNS} FROM hooks WHERE tenant_id = ? AND id = ?",  # noqa: S608
                (tenant_id, hook_id),
            ).fetchone()
            return _hook(row) if row else None

        return await self.db.read(op)

    async def list_hooks(
        self,
        tenant_id: str,
        *,
        enabled: bool | None = None,
        trigger_id: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page:
        where: list[str] = ["tenant_id = ?"]
        args: list[Any] = [tenant_id]
        if enabled is not None:
            where.append("enabled = ?")
            args.append(int(enabled))
        if trigger_id is not None:
            where.append("trigger_id = ?")
            args.append(trigger_id)
        clause = " AND ".join(where)

        def op(c: sqlite3.Connection) -> Page:
            rows = c.execute(
                f'SELECT {_HOOK_COLUMNS} FROM hooks WHERE {clause} ORDER BY "order", created_at, id'  # noqa: S608
                " LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            total = c.execute(f"SELECT COUNT(*) FROM hooks WHERE {clause}", args).fetchone()[0]  # noqa: S608
            return Page([_hook(r) for r in rows], total)

        return await self.db.read(op)

    async def update_hook(
        self,
        tenant_id: str,
        hook_id: str,
        changes: Mapping[str, Any],
        now: float,
        *,
        single_enabled_trigger: str | None = None,
    ) -> tuple[Hook, Hook]:
        """Apply API-named `changes`; returns (before, after). With `single_enabled_trigger`,
        enabling the hook is refused (409) when another hook of that point is enabled."""

        def op(c: sqlite3.Connection) -> tuple[Hook, Hook]:
            row = c.execute(
                f"SELECT {_HOOK_COLUMNS} FROM hooks WHERE tenant_id = ? AND id = ?",  # noqa: S608
                (tenant_id, hook_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"hook {hook_id!r} not found")
            before = _hook(row)
            if single_enabled_trigger and changes.get("enabled") and not before.enabled:
                other = c.execute(
                    "SELECT name FROM hooks WHERE tenant_id = ? AND trigger_id = ? AND enabled = 1"
                    " AND id != ?",
                    (tenant_id, single_enabled_trigger, hook_id),
                ).fetchone()
                if other:
                    raise Conflict(
                        f"only one {single_enabled_trigger} hook can be enabled; {other[0]!r} already is"
                    )
            sets, args = ["updated_at = ?"], [now]
            for key, value in changes.items():
                sets.append(f"{HOOK_FIELD_COLUMNS[key]} = ?")
                args.append(int(value) if isinstance(value, bool) else value)
            try:
                c.execute(f"UPDATE hooks SET {', '.join(sets)} WHERE id = ?", (*args, hook_id))  # noqa: S608
            except sqlite3.IntegrityError as exc:
                if _is_unique_violation(exc):
                    raise Conflict(f"a hook named {changes.get('name')!r} already exists") from None
                raise
            after = _hook(
                c.execute(f"SELECT {_HOOK_COLUMNS} FROM hooks WHERE id = ?", (hook_id,)).fetchone()  # noqa: S608
            )
            if before.enabled and not after.enabled:
                # Parked: pending deliveries wait, without using attempts, until re-enabled.
                c.execute(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE hook_id = ? AND status = 'pending'",
                    (PARKED_AT, hook_id),
                )
            elif after.enabled and not before.enabled:
                c.execute(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE hook_id = ? AND status = 'pending'"
                    " AND next_attempt_at >= ?",
                    (now, hook_id, PARKED_AT),
                )
            return before, after

        return await self.db.write(op)

    async def delete_hook(self, tenant_id: str, hook_id: str, now: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            cur = c.execute("DELETE FROM hooks WHERE tenant_id = ? AND id = ?", (tenant_id, hook_id))
            if cur.rowcount == 0:
                raise NotFound(f"hook {hook_id!r} not found")
            c.execute(
                "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease_owner = NULL,"
                " last_error = 'hook deleted', updated_at = ? WHERE hook_id = ? AND status = 'pending'",
                (now, hook_id),
            )

        await self.db.write(op)

    async def hook_materials(self, tenant_id: str) -> list[HookMaterial]:
        """Every hook of a tenant with its (encrypted) secrets and signing secrets."""

        def op(c: sqlite3.Connection) -> list[HookMaterial]:
            hooks = [
                _hook(r)
                for r in c.execute(
                    f'SELECT {_HOOK_COLUMNS} FROM hooks WHERE tenant_id = ? ORDER BY "order", created_at, id',  # noqa: S608
                    (tenant_id,),
                )
            ]
            out = []
            for hook in hooks:
                secrets = dict(
                    c.execute(
                        "SELECT name, value FROM hook_secrets WHERE hook_id = ? ORDER BY name", (hook.id,)
                    )
                )
                signing = [
                    SigningSecret(value=r[0], created_at=r[1], expires_at=r[2])
                    for r in c.execute(
                        "SELECT value, created_at, expires_at FROM signing_secrets WHERE hook_id = ?"
                        " ORDER BY id DESC",
                        (hook.id,),
                    )
                ]
                out.append(HookMaterial(hook=hook, secrets=secrets, signing=signing))
            return out

        return await self.db.read(op)

    # -- hook secrets ----------------------------------------------------------------------

    async def secret_names(self, tenant_id: str, hook_id: str) -> list[str]:
        def op(c: sqlite3.Connection) -> list[str]:
            _require_hook(c, tenant_id, hook_id)
            rows = c.execute("SELECT name FROM hook_secrets WHERE hook_id = ? ORDER BY name", (hook_id,))
            return [r[0] for r in rows]

        return await self.db.read(op)

    async def add_secrets(self, tenant_id: str, hook_id: str, values: Mapping[str, str], now: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            _require_hook(c, tenant_id, hook_id)
            existing = {r[0].lower() for r in _secret_rows(c, hook_id)}
            clash = sorted(n for n in values if n.lower() in existing)
            if clash:
                raise Conflict(f"secret {clash[0]!r} already exists")
            if len(existing) + len(values) > MAX_SECRETS_PER_HOOK:
                raise BadRequest(f"a hook can have at most {MAX_SECRETS_PER_HOOK} secrets")
            c.executemany(
                "INSERT INTO hook_secrets (hook_id, name, value, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(hook_id, n, v, now, now) for n, v in values.items()],
            )
            c.execute("UPDATE hooks SET updated_at = ? WHERE id = ?", (now, hook_id))

        await self.db.write(op)

    async def update_secrets(
        self, tenant_id: str, hook_id: str, values: Mapping[str, str], now: float
    ) -> None:
        def op(c: sqlite3.Connection) -> None:
            _require_hook(c, tenant_id, hook_id)
            existing = {r[0] for r in _secret_rows(c, hook_id)}
            missing = sorted(n for n in values if n not in existing)
            if missing:
                raise NotFound(f"secret {missing[0]!r} not found")
            c.executemany(
                "UPDATE hook_secrets SET value = ?, updated_at = ? WHERE hook_id = ? AND name = ?",
                [(v, now, hook_id, n) for n, v in values.items()],
            )
            c.execute("UPDATE hooks SET updated_at = ? WHERE id = ?", (now, hook_id))

        await self.db.write(op)

    async def delete_secrets(self, tenant_id: str, hook_id: str, names: Sequence[str], now: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            _require_hook(c, tenant_id, hook_id)
            existing = {r[0] for r in _secret_rows(c, hook_id)}
            missing = sorted(n for n in names if n not in existing)
            if missing:
                raise NotFound(f"secret {missing[0]!r} not found")
            c.executemany(
                "DELETE FROM hook_secrets WHERE hook_id = ? AND name = ?", [(hook_id, n) for n in names]
            )
            c.execute("UPDATE hooks SET updated_at = ? WHERE id = ?", (now, hook_id))

        await self.db.write(op)

    # -- signing secrets -------------------------------------------------------------------

    async def signing_secrets(self, tenant_id: str, hook_id: str, now: float) -> list[SigningSecret]:
        """Valid signing secrets, newest first (expired ones are left out)."""

        def op(c: sqlite3.Connection) -> list[SigningSecret]:
            _require_hook(c, tenant_id, hook_id)
            return [
                SigningSecret(value=r[0], created_at=r[1], expires_at=r[2])
                for r in c.execute(
                    "SELECT value, created_at, expires_at FROM signing_secrets WHERE hook_id = ?"
                    " AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC",
                    (hook_id, now),
                )
            ]

        return await self.db.read(op)

    async def rotate_signing_secret(
        self, tenant_id: str, hook_id: str, new_value: str, *, grace_until: float, now: float
    ) -> None:
        def op(c: sqlite3.Connection) -> None:
            _require_hook(c, tenant_id, hook_id)
            c.execute(
                "UPDATE signing_secrets SET expires_at = ? WHERE hook_id = ? AND expires_at IS NULL",
                (grace_until, hook_id),
            )
            c.execute("DELETE FROM signing_secrets WHERE hook_id = ? AND expires_at <= ?", (hook_id, now))
            c.execute(
                "INSERT INTO signing_secrets (hook_id, value, created_at, expires_at) VALUES (?, ?, ?, NULL)",
                (hook_id, new_value, now),
            )
            c.execute("UPDATE hooks SET updated_at = ? WHERE id = ?", (now, hook_id))

        await self.db.write(op)

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
    ) -> str | None:
        """Store an event and one delivery per (delivery id, hook id), atomically.

        With an idempotency key already used (and not expired) by the tenant, stores nothing
        and returns the first request's stored response (`Conflict` when that request was for
        another point); otherwise returns None.
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
                "INSERT INTO events (id, tenant_id, trigger_id, body, created_at) VALUES (?, ?, ?, ?, ?)",
                (event_id, tenant_id, trigger_id, body, now),
            )
            c.executemany(
                f"INSERT INTO deliveries ({_DELIVERY_COLUMNS})"  # noqa: S608
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
            return None

        return await self.db.write(op)

    async def claim_due(self, *, now: float, limit: int, lease_s: float, owner: str) -> list[Claimed]:
        """Lease up to `limit` due pending deliveries, oldest due first.

        The lease moves `next_attempt_at` to the lease expiry, so a claimed row is out of the
        due range (no other worker takes it) and comes back by itself if its worker dies.
        The rows are found through the partial index `deliveries_due`: the cost depends on
        how many are due, not on how many deliveries the table holds.
        """

        def op(c: sqlite3.Connection) -> list[Claimed]:
            due = [r[0] for r in c.execute(CLAIM_SQL, (now, limit))]
            if not due:
                return []
            marks = ",".join("?" * len(due))
            rows = c.execute(
                f"UPDATE deliveries SET next_attempt_at = ?, lease_owner = ? WHERE id IN ({marks})"  # noqa: S608
                f" RETURNING {_DELIVERY_COLUMNS}",
                (now + lease_s, owner, *due),
            ).fetchall()
            order = {did: i for i, did in enumerate(due)}
            deliveries = sorted((_delivery(r) for r in rows), key=lambda d: order[d.id])
            event_ids = list({d.event_id for d in deliveries})
            marks = ",".join("?" * len(event_ids))
            bodies = dict(c.execute(f"SELECT id, body FROM events WHERE id IN ({marks})", event_ids))  # noqa: S608
            return [Claimed(delivery=d, body=bodies.get(d.event_id, b"{}")) for d in deliveries]

        return await self.db.write(op)

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
            for o in outcomes:
                cond = "id = ? AND status = 'pending'"
                args: list[Any] = [o.delivery_id]
                if owner is not None:
                    cond += " AND (lease_owner = ? OR lease_owner IS NULL)"
                    args.append(owner)
                c.execute(
                    "UPDATE deliveries SET status = ?, next_attempt_at = ?,"  # noqa: S608
                    " attempt_count = attempt_count + ?, last_error = COALESCE(?, last_error),"
                    f" lease_owner = NULL, updated_at = ? WHERE {cond}",
                    (o.status, o.next_attempt_at, 1 if o.uses_attempt else 0, o.last_error, now, *args),
                )
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
                    (o.delivery_id, *_attempt_values(a)),
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
                f"INSERT INTO deliveries ({_DELIVERY_COLUMNS})"  # noqa: S608
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
                    (row.delivery_id, i + 1, *_attempt_values(a))
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
        clause = " AND ".join(where)

        def op(c: sqlite3.Connection) -> Page:
            rows = c.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE {clause}"  # noqa: S608
                " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            total = c.execute(f"SELECT COUNT(*) FROM deliveries WHERE {clause}", args).fetchone()[0]  # noqa: S608
            return Page([_delivery(r) for r in rows], total)

        return await self.db.read(op)

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> tuple[Delivery, list[Attempt]] | None:
        def op(c: sqlite3.Connection) -> tuple[Delivery, list[Attempt]] | None:
            row = c.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = ? AND id = ?",  # noqa: S608
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
            return _delivery(row), attempts

        return await self.db.read(op)

    async def retry_delivery(self, tenant_id: str, delivery_id: str, now: float) -> Delivery:
        """Make a delivery due now again (a failed or cancelled one becomes pending)."""

        def op(c: sqlite3.Connection) -> Delivery:
            row = c.execute(
                "SELECT d.kind, h.id, h.enabled, d.status, d.lease_owner, d.next_attempt_at"
                " FROM deliveries d LEFT JOIN hooks h ON h.id = d.hook_id WHERE d.tenant_id = ? AND d.id = ?",
                (tenant_id, delivery_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"delivery {delivery_id!r} not found")
            if row[0] != "async":
                raise BadRequest("only deliveries of asynchronous points can be retried")
            if row[1] is None:
                raise Conflict("the hook of this delivery was deleted")
            if row[3] == "pending" and row[4] is not None and (row[5] or 0) > now:
                # Being attempted right now: a second, concurrent send would help nobody.
                return _delivery_by_id(c, delivery_id)
            due = now if row[2] else PARKED_AT
            c.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, lease_owner = NULL,"
                " updated_at = ?, created_at = created_at WHERE id = ?",
                (due, now, delivery_id),
            )
            return _delivery_by_id(c, delivery_id)

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
    ) -> list[str]:
        """At most `limit` new deliveries to the hook for its events in [since, until) whose
        last delivery to it has one of `statuses`; returns the new delivery ids."""
        status_list = list(statuses)

        def op(c: sqlite3.Connection) -> list[str]:
            hook = _require_hook(c, tenant_id, hook_id)
            # Per event of the window, the hook's latest delivery (SQLite takes the bare
            # `status` from the row holding MAX(rowid), the last inserted); replay those whose
            # status is one of `statuses`, oldest event first.
            rows = c.execute(
                "SELECT d.event_id, d.status, MAX(d.rowid) FROM deliveries d"
                " JOIN events e ON e.id = d.event_id"
                " WHERE d.tenant_id = ? AND d.hook_id = ? AND d.kind = 'async'"
                " AND e.created_at >= ? AND e.created_at < ?"
                " GROUP BY d.event_id ORDER BY e.created_at, d.event_id",
                (tenant_id, hook_id, since, until),
            ).fetchall()
            due = now if hook[1] else PARKED_AT
            created: list[str] = []
            for event_id, status, _ in rows:
                if status not in status_list:
                    continue
                if len(created) >= limit:  # the caller's cap on one replay
                    break
                did = new_id()
                c.execute(
                    f"INSERT INTO deliveries ({_DELIVERY_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, 'async', 'pending', 0, ?, NULL, ?, ?)",
                    (did, tenant_id, event_id, hook_id, hook[2], due, now, now),
                )
                created.append(did)
            return created

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
        idempotency keys and pauses. Pending deliveries and their events are kept. Works in
        transactions of at most `batch` deliveries, so concurrent ingests keep committing."""

        def deliveries(c: sqlite3.Connection) -> int:
            done = c.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
                " WHERE created_at < ? AND status != 'pending' LIMIT ?) RETURNING id",
                (before, batch),
            ).fetchall()
            c.executemany("DELETE FROM attempts WHERE delivery_id = ?", done)
            return len(done)

        def rest(c: sqlite3.Connection) -> None:
            c.execute(
                "DELETE FROM events WHERE created_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
                (before,),
            )
            c.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))
            c.execute("DELETE FROM destination_pauses WHERE until <= ?", (now,))
            c.execute("DELETE FROM signing_secrets WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))

        removed = 0
        while True:
            count = await self.db.write(deliveries)
            removed += count
            if count < batch:
                break
        await self.db.write(rest)
        return removed

    async def backlog(self) -> int:
        def op(c: sqlite3.Connection) -> int:
            return int(c.execute("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").fetchone()[0])

        return await self.db.read(op)


def _attempt_values(a: Attempt) -> tuple[Any, ...]:
    """An attempt's columns after `delivery_id` and `number`, in the order of the table."""
    return (
        a.started_at,
        a.duration_ms,
        a.status_code,
        a.error,
        a.response_body,
        a.rl_limit,
        a.rl_remaining,
        a.rl_reset,
        a.retry_after,
    )


def _require_hook(c: sqlite3.Connection, tenant_id: str, hook_id: str) -> tuple[str, int, str]:
    row = c.execute(
        "SELECT id, enabled, trigger_id FROM hooks WHERE tenant_id = ? AND id = ?", (tenant_id, hook_id)
    ).fetchone()
    if row is None:
        raise NotFound(f"hook {hook_id!r} not found")
    return (row[0], row[1], row[2])


def _secret_rows(c: sqlite3.Connection, hook_id: str) -> list[tuple[str]]:
    return c.execute("SELECT name FROM hook_secrets WHERE hook_id = ?", (hook_id,)).fetchall()


def _delivery_by_id(c: sqlite3.Connection, delivery_id: str) -> Delivery:
    row = c.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()  # noqa: S608
    return _delivery(row)
