"""Tenants on SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from ...errors import Conflict, NotFound
from ..database import Database
from ..models import (
    Page,
    Tenant,
)
from .rows import (
    TENANT_COLUMNS,
    is_unique_violation,
    page,
    tenant_from_row,
)


class TenantQueries:
    """Tenants: create, read, list, update, delete (with everything they own)."""

    db: Database

    # -- tenants ---------------------------------------------------------------------------

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        def op(c: sqlite3.Connection) -> Tenant:
            try:
                c.execute(
                    "INSERT INTO tenants (id, name, allowed_cidrs, deadlines, max_in_flight, created_at,"
                    " updated_at, quotas) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        tenant.id,
                        tenant.name,
                        json.dumps(list(tenant.allowed_cidrs)),
                        json.dumps(tenant.deadlines),
                        tenant.max_in_flight,
                        tenant.created_at,
                        tenant.updated_at,
                        json.dumps(tenant.quotas),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if is_unique_violation(exc):
                    raise Conflict(f"tenant {tenant.id!r} already exists") from None
                raise
            return tenant

        return await self.db.write(op)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        def op(c: sqlite3.Connection) -> Tenant | None:
            row = c.execute(
                f"SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?",  # noqa: S608
                (tenant_id,),
            ).fetchone()
            return tenant_from_row(row) if row else None

        return await self.db.read(op)

    async def list_tenants(self, *, offset: int, limit: int) -> Page:
        def op(c: sqlite3.Connection) -> Page:
            return page(
                c,
                columns=TENANT_COLUMNS,
                table="tenants",
                where=(),
                args=(),
                order="id",
                offset=offset,
                limit=limit,
                row=tenant_from_row,
            )

        return await self.db.read(op)

    async def update_tenant(self, tenant_id: str, changes: Mapping[str, Any], now: float) -> Tenant:
        columns = {
            "name": "name",
            "allowed_cidrs": "allowed_cidrs",
            "deadlines": "deadlines",
            "max_in_flight": "max_in_flight",
            "quotas": "quotas",
        }

        def op(c: sqlite3.Connection) -> Tenant:
            sets: list[str] = ["updated_at = ?"]
            args: list[Any] = [now]
            for key, value in changes.items():
                sets.append(f"{columns[key]} = ?")
                args.append(
                    json.dumps(list(value) if key == "allowed_cidrs" else value)
                    if key in ("allowed_cidrs", "deadlines", "quotas")
                    else value
                )
            cur = c.execute(
                f"UPDATE tenants SET {', '.join(sets)} WHERE id = ?",  # noqa: S608 - column names are fixed
                (*args, tenant_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"tenant {tenant_id!r} not found")
            row = c.execute(
                f"SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?",  # noqa: S608
                (tenant_id,),
            ).fetchone()
            return tenant_from_row(row)

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
            for table in ("deliveries", "events", "idempotency_keys", "destination_pauses", "replays",
                          "dashboard_sessions"):
                c.execute(f"DELETE FROM {table} WHERE tenant_id = ?", (tenant_id,))  # noqa: S608 - fixed names

        await self.db.write(op)
