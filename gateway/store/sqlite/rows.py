"""Columns, row mappers and small query helpers shared by the SQLite store's parts."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...errors import NotFound, shown
from ..models import (
    Attempt,
    Delivery,
    Hook,
    Page,
    Tenant,
)

TENANT_COLUMNS = "id, name, allowed_cidrs, deadlines, max_in_flight, created_at, updated_at, quotas"
HOOK_COLUMNS = (
    'id, tenant_id, name, trigger_id, url, enabled, "order", timeout_ms, failure_policy, '
    "max_concurrency, rate_limit_per_second, format, disabled_reason, created_at, updated_at"
)
DELIVERY_COLUMNS = (
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
PURGE_BATCH = 5000  # finished deliveries deleted per transaction, so ingest is not held up



def hook_from_row(row: Sequence[Any]) -> Hook:
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


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(*row)


def tenant_from_row(row: Sequence[Any]) -> Tenant:
    return Tenant(
        id=row[0],
        name=row[1],
        allowed_cidrs=tuple(json.loads(row[2])),
        deadlines=json.loads(row[3]),
        max_in_flight=row[4],
        created_at=row[5],
        updated_at=row[6],
        quotas=json.loads(row[7]),
    )


def is_unique_violation(exc: sqlite3.IntegrityError) -> bool:
    return "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc)


def attempt_values(a: Attempt) -> tuple[Any, ...]:
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


def require_hook(c: sqlite3.Connection, tenant_id: str, hook_id: str) -> tuple[str, int, str]:
    row = c.execute(
        "SELECT id, enabled, trigger_id FROM hooks WHERE tenant_id = ? AND id = ?", (tenant_id, hook_id)
    ).fetchone()
    if row is None:
        raise NotFound(f"hook {shown(hook_id)} not found")
    return (row[0], row[1], row[2])


def secret_rows(c: sqlite3.Connection, hook_id: str) -> list[tuple[str]]:
    return c.execute("SELECT name FROM hook_secrets WHERE hook_id = ?", (hook_id,)).fetchall()


def delivery_by_id(c: sqlite3.Connection, delivery_id: str) -> Delivery:
    row = c.execute(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()  # noqa: S608
    return delivery_from_row(row)


def page(
    c: sqlite3.Connection,
    *,
    columns: str,
    table: str,
    where: Sequence[str],
    args: Sequence[Any],
    order: str,
    offset: int,
    limit: int,
    row: Callable[[Sequence[Any]], Any],
) -> Page:
    """One page of `table` and the total count, under the same conditions. Every name passed
    in is one of the store's own (tables, columns, conditions); values go in `args`."""
    clause = " AND ".join(where) if where else "1"
    rows = c.execute(
        f"SELECT {columns} FROM {table} WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608
        (*args, limit, offset),
    ).fetchall()
    total = c.execute(f"SELECT COUNT(*) FROM {table} WHERE {clause}", tuple(args)).fetchone()[0]  # noqa: S608
    return Page([row(r) for r in rows], int(total))


def existing_secrets(c: sqlite3.Connection, hook_id: str, names: Iterable[str]) -> None:
    """`NotFound` naming the first of `names` the hook has no secret of."""
    existing = {r[0] for r in secret_rows(c, hook_id)}
    missing = sorted(n for n in names if n not in existing)
    if missing:
        raise NotFound(f"secret {missing[0]!r} not found")
