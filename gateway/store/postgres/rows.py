"""Columns, row mappers and small query helpers shared by the PostgreSQL store's parts."""

from __future__ import annotations

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
from ..models import Attempt, Delivery, Page
from .database import clean

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
ATTEMPT_COLUMNS = (
    "delivery_id, number, started_at, duration_ms, status_code, error, response_body, rl_limit,"
    " rl_remaining, rl_reset, retry_after"
)
PURGE_BATCH = 500  # finished deliveries per transaction: small, so ingest is not held up (scenario 7)


def attempt_values(a: Attempt) -> tuple[Any, ...]:
    """An attempt's columns after `delivery_id` and `number`, in the order of the table."""
    return (
        float(a.started_at),
        float(a.duration_ms),
        a.status_code,
        clean(a.error),
        clean(a.response_body),
        a.rl_limit,
        a.rl_remaining,
        None if a.rl_reset is None else float(a.rl_reset),
        None if a.retry_after is None else float(a.retry_after),
    )


def has_nul(*keys: object) -> bool:
    """Whether a key to look up holds a NUL character: PostgreSQL's text cannot hold one, so no
    stored row has it, and the look-up finds nothing, as on SQLite (the query itself would fail)."""
    return any(isinstance(k, str) and "\x00" in k for k in keys)


async def require_hook(c: Any, tenant_id: str, hook_id: str, *, lock: bool = False) -> tuple[str, bool, str]:
    """The hook's (id, enabled, trigger_id), or `NotFound`; with `lock`, its row is locked until
    the transaction ends (what is decided from it cannot be raced by another instance)."""
    if has_nul(tenant_id, hook_id):
        raise NotFound(f"hook {shown(hook_id)} not found")
    row = await c.fetchrow(
        "SELECT id, enabled, trigger_id FROM hooks WHERE tenant_id = $1 AND id = $2"  # noqa: S608 - fixed text
        + (" FOR NO KEY UPDATE" if lock else ""),
        tenant_id,
        hook_id,
    )
    if row is None:
        raise NotFound(f"hook {shown(hook_id)} not found")
    return (row[0], row[1], row[2])


async def lock_tenant(c: Any, tenant_id: str) -> None:
    """Hold the tenant's row until the transaction ends: checks of its quotas made under it see
    every other instance's committed changes, and none can change them meanwhile."""
    await c.execute("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE", tenant_id)


async def secret_names_of(c: Any, hook_id: str) -> list[str]:
    return [r[0] for r in await c.fetch("SELECT name FROM hook_secrets WHERE hook_id = $1", hook_id)]


async def delivery_by_id(c: Any, delivery_id: str) -> Delivery:
    row = await c.fetchrow(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1", delivery_id)  # noqa: S608
    return delivery_from_row(row)


class Where:
    """Conditions with numbered parameters: `w.add("tenant_id = {}", t)` becomes `tenant_id = $1`."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[Any] = []

    def add(self, condition: str, value: Any) -> None:
        self.args.append(value)
        self.conditions.append(condition.format(f"${len(self.args)}"))

    def sql(self) -> str:
        return " AND ".join(self.conditions) if self.conditions else "TRUE"


async def page(
    c: Any,
    *,
    columns: str,
    table: str,
    where: Where,
    order: str,
    offset: int,
    limit: int,
    row: Callable[[Sequence[Any]], Any],
) -> Page:
    """One page of `table` and the total count, under the same conditions. Every name passed
    in is one of the store's own (tables, columns, conditions); values are parameters."""
    n = len(where.args)
    rows = await c.fetch(
        f"SELECT {columns} FROM {table} WHERE {where.sql()} ORDER BY {order}"  # noqa: S608
        f" LIMIT ${n + 1} OFFSET ${n + 2}",
        *where.args,
        limit,
        offset,
    )
    total = await c.fetchval(f"SELECT COUNT(*) FROM {table} WHERE {where.sql()}", *where.args)  # noqa: S608
    return Page([row(r) for r in rows], int(total))


async def existing_secrets(c: Any, hook_id: str, names: Iterable[str]) -> None:
    """`NotFound` naming the first of `names` the hook has no secret of."""
    existing = set(await secret_names_of(c, hook_id))
    missing = sorted(n for n in names if n not in existing)
    if missing:
        raise NotFound(f"secret {missing[0]!r} not found")
