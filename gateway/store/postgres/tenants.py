"""Tenants on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...errors import Conflict, NotFound, shown
from ..models import Page, Tenant
from .database import Database, status_count
from .rows import TENANT_COLUMNS, Where, has_nul, page, tenant_from_row

_COLUMNS = {
    "name": "name",
    "allowed_cidrs": "allowed_cidrs",
    "deadlines": "deadlines",
    "max_in_flight": "max_in_flight",
    "quotas": "quotas",
}


class TenantQueries:
    """Tenants: create, read, list, update, delete (with everything they own)."""

    db: Database

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        import asyncpg  # noqa: PLC0415

        async def op(c: Any) -> Tenant:
            try:
                await c.execute(
                    "INSERT INTO tenants (id, name, allowed_cidrs, deadlines, max_in_flight, created_at,"
                    " updated_at, quotas) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    tenant.id,
                    tenant.name,
                    json.dumps(list(tenant.allowed_cidrs)),
                    json.dumps(tenant.deadlines),
                    tenant.max_in_flight,
                    float(tenant.created_at),
                    float(tenant.updated_at),
                    json.dumps(tenant.quotas),
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"tenant {tenant.id!r} already exists") from None
            return tenant

        return await self.db.write(op)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        if has_nul(tenant_id):
            return None

        async def op(c: Any) -> Tenant | None:
            row = await c.fetchrow(f"SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1", tenant_id)  # noqa: S608
            return tenant_from_row(row) if row else None

        return await self.db.read(op)

    async def list_tenants(self, *, offset: int, limit: int) -> Page:
        async def op(c: Any) -> Page:
            return await page(c, columns=TENANT_COLUMNS, table="tenants", where=Where(), order="id",
                              offset=offset, limit=limit, row=tenant_from_row)

        return await self.db.read(op)

    async def update_tenant(self, tenant_id: str, changes: Mapping[str, Any], now: float) -> Tenant:
        sets: list[str] = ["updated_at = $1"]
        args: list[Any] = [float(now)]
        for key, value in changes.items():
            args.append(
                json.dumps(list(value) if key == "allowed_cidrs" else value)
                if key in ("allowed_cidrs", "deadlines", "quotas")
                else value
            )
            sets.append(f"{_COLUMNS[key]} = ${len(args)}")

        async def op(c: Any) -> Tenant:
            if has_nul(tenant_id):
                raise NotFound(f"tenant {shown(tenant_id)} not found")
            row = await c.fetchrow(
                f"UPDATE tenants SET {', '.join(sets)} WHERE id = ${len(args) + 1}"  # noqa: S608 - fixed names
                f" RETURNING {TENANT_COLUMNS}",
                *args,
                tenant_id,
            )
            if row is None:
                raise NotFound(f"tenant {shown(tenant_id)} not found")
            return tenant_from_row(row)

        return await self.db.write(op)

    async def delete_tenant(self, tenant_id: str) -> None:
        async def op(c: Any) -> None:
            deleted = "DELETE 0" if has_nul(tenant_id) else await c.execute(
                "DELETE FROM tenants WHERE id = $1", tenant_id
            )
            if status_count(deleted) == 0:
                raise NotFound(f"tenant {shown(tenant_id)} not found")
            # Hooks and their secrets go by ON DELETE CASCADE; the rest is removed here, so a
            # tenant created again with the same id starts empty.
            await c.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE tenant_id = $1)",
                tenant_id,
            )
            for table in ("deliveries", "delivery_queue", "events", "idempotency_keys", "destination_pauses",
                          "replays", "dashboard_sessions"):
                await c.execute(f"DELETE FROM {table} WHERE tenant_id = $1", tenant_id)  # noqa: S608 - fixed names

        await self.db.write(op)
