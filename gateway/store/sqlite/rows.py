"""Columns, row mappers and small query helpers shared by the SQLite store's parts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...errors import NotFound, shown

# The mappers both stores share, re-exported for this store's query modules.
from ..columns import HOOK_FIELD_COLUMNS as HOOK_FIELD_COLUMNS
from ..columns import column_value as column_value
from ..columns import delivery_from_row as delivery_from_row
from ..columns import dependencies_column as dependencies_column
from ..columns import hook_from_row as hook_from_row
from ..columns import tenant_from_row as tenant_from_row
from ..models import (
    Attempt,
    Delivery,
    Page,
)

TENANT_COLUMNS = "id, name, allowed_cidrs, deadlines, max_in_flight, created_at, updated_at, quotas"
HOOK_COLUMNS = (
    'id, tenant_id, name, trigger_id, url, enabled, "order", timeout_ms, failure_policy, '
    "max_concurrency, rate_limit_per_second, format, disabled_reason, created_at, updated_at, "
    "signature_scheme, script, dependencies"
)
DELIVERY_COLUMNS = (
    "id, tenant_id, event_id, hook_id, trigger_id, kind, status, attempt_count, next_attempt_at, "
    "last_error, created_at, updated_at"
)
# Finished deliveries (and events) deleted per transaction: SQLite has one writer, so short
# transactions keep ingest committing (bench scenario 7: 250 against 1,000 took ingest p99 from
# 2.76x to 1.86x of its level before the purge, the purge from 5 s to 10 s for 300,000).
PURGE_BATCH = 250



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
