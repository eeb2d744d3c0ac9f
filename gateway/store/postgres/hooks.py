"""Hooks, their secrets and signing secrets on PostgreSQL; every query scoped to its tenant.

What is checked before a write (a tenant's quotas, one enabled hook per point) is checked under
a lock of the tenant's row, so two instances creating hooks at once cannot both pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import BadRequest, Conflict, Forbidden, NotFound, shown
from ..models import MAX_SECRETS_PER_HOOK, PARKED_AT, Hook, HookMaterial, Page, SigningSecret
from . import lanes
from .database import Database, status_count
from .rows import (
    HOOK_COLUMNS,
    HOOK_FIELD_COLUMNS,
    Where,
    column_value,
    dependencies_column,
    existing_secrets,
    has_nul,
    hook_from_row,
    lock_tenant,
    page,
    require_hook,
    secret_names_of,
)

_INSERT_SIGNING_SECRET = (
    "INSERT INTO signing_secrets (hook_id, value, created_at, expires_at, public_key)"  # noqa: S105
    " VALUES ($1, $2, $3, NULL, $4)"
)


class HookQueries:
    """Hooks, hook secrets and signing secrets."""

    db: Database

    # -- hooks -----------------------------------------------------------------------------

    async def create_hook(
        self,
        hook: Hook,
        signing_secret: str,
        *,
        single_enabled: bool = False,
        max_per_point: int | None = None,
        max_hooks: int | None = None,
        signing_public_key: str | None = None,
    ) -> Hook:
        """Insert a hook and its first signing secret (with its `whpk_` public key when the hook
        signs v1a). With `single_enabled`, an enabled hook is
        refused (409) when another hook of its point is enabled; with `max_per_point` or
        `max_hooks`, a hook past the tenant's quota is refused (403). Both are checked under a
        lock of the tenant's row, so concurrent creates (on any instance) cannot both pass."""
        import asyncpg  # noqa: PLC0415

        async def op(c: Any) -> Hook:
            if max_per_point is not None or max_hooks is not None or single_enabled:
                await lock_tenant(c, hook.tenant_id)
            if max_per_point is not None or max_hooks is not None:
                await _check_hook_quotas(c, hook, max_per_point, max_hooks)
            if single_enabled and hook.enabled:
                other = await c.fetchval(
                    "SELECT name FROM hooks WHERE tenant_id = $1 AND trigger_id = $2 AND enabled LIMIT 1",
                    hook.tenant_id,
                    hook.trigger_id,
                )
                if other is not None:
                    raise Conflict(f"only one {hook.trigger_id} hook can be enabled; {other!r} already is",
                                   field="enabled")
            try:
                await c.execute(
                    f"INSERT INTO hooks ({HOOK_COLUMNS})"  # noqa: S608
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,"
                    " $18)",
                    hook.id,
                    hook.tenant_id,
                    hook.name,
                    hook.trigger_id,
                    hook.url,
                    bool(hook.enabled),
                    hook.order,
                    hook.timeout_ms,
                    hook.failure_policy,
                    hook.max_concurrency,
                    None if hook.rate_limit_per_second is None else float(hook.rate_limit_per_second),
                    hook.format,
                    hook.disabled_reason,
                    float(hook.created_at),
                    float(hook.updated_at),
                    hook.signature_scheme,
                    hook.script,
                    dependencies_column(hook.dependencies),
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a hook named {hook.name!r} already exists", field="name") from None
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(f"tenant {shown(hook.tenant_id)} not found") from None
            await c.execute(
                _INSERT_SIGNING_SECRET,
                hook.id,
                signing_secret,
                float(hook.created_at),
                signing_public_key,
            )
            return hook

        return await self.db.write(op)

    async def get_hook(self, tenant_id: str, hook_id: str) -> Hook | None:
        if has_nul(tenant_id, hook_id):
            return None

        async def op(c: Any) -> Hook | None:
            row = await c.fetchrow(
                f"SELECT {HOOK_COLUMNS} FROM hooks WHERE tenant_id = $1 AND id = $2",  # noqa: S608
                tenant_id,
                hook_id,
            )
            return hook_from_row(row) if row else None

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
        if has_nul(tenant_id, trigger_id):
            return Page([], 0)
        where = Where()
        where.add("tenant_id = {}", tenant_id)
        if enabled is not None:
            where.add("enabled = {}", bool(enabled))
        if trigger_id is not None:
            where.add("trigger_id = {}", trigger_id)

        async def op(c: Any) -> Page:
            return await page(c, columns=HOOK_COLUMNS, table="hooks", where=where,
                              order='"order", created_at, id', offset=offset, limit=limit, row=hook_from_row)

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
        import asyncpg  # noqa: PLC0415

        now = float(now)

        async def op(c: Any) -> tuple[Hook, Hook]:
            if has_nul(tenant_id, hook_id):
                raise NotFound(f"hook {shown(hook_id)} not found")
            enabling = bool(single_enabled_trigger and changes.get("enabled"))
            if enabling:
                await lock_tenant(c, tenant_id)  # the tenant before the hook, as create_hook
            row = await c.fetchrow(
                f"SELECT {HOOK_COLUMNS} FROM hooks WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE",  # noqa: S608
                tenant_id,
                hook_id,
            )
            if row is None:
                raise NotFound(f"hook {shown(hook_id)} not found")
            before = hook_from_row(row)
            if enabling and not before.enabled:
                other = await c.fetchval(
                    "SELECT name FROM hooks WHERE tenant_id = $1 AND trigger_id = $2 AND enabled"
                    " AND id != $3 LIMIT 1",
                    tenant_id,
                    single_enabled_trigger,
                    hook_id,
                )
                if other is not None:
                    raise Conflict(
                        f"only one {single_enabled_trigger} hook can be enabled; {other!r} already is",
                        field="enabled",
                    )
            sets, args = ["updated_at = $1"], [now]
            for key, value in changes.items():
                args.append(float(value) if key == "rateLimitPerSecond" and value is not None
                            else column_value(key, value))
                sets.append(f"{HOOK_FIELD_COLUMNS[key]} = ${len(args)}")
            try:
                after_row = await c.fetchrow(
                    f"UPDATE hooks SET {', '.join(sets)} WHERE id = ${len(args) + 1}"  # noqa: S608
                    f" RETURNING {HOOK_COLUMNS}",
                    *args,
                    hook_id,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a hook named {changes.get('name')!r} already exists",
                                   field="name") from None
            after = hook_from_row(after_row)
            if before.enabled and not after.enabled:
                # Parked: pending deliveries wait, without using attempts, until re-enabled. One
                # in flight keeps its lease (its outcome moves it on): parked, an enable would make
                # it due while it is still being sent, and it would stop counting against the cap.
                await c.execute(lanes.PARK_HOOK_SQL, PARKED_AT, hook_id, now)
            elif after.enabled and not before.enabled:
                await c.execute(lanes.UNPARK_HOOK_SQL, now, hook_id, PARKED_AT)
            # An edit applies to queued work: the lane is looked at again now, under the new
            # limits, but not before a 429's wait (`hold_until`); a new rate starts from a fresh
            # turn, a new URL from no run of 429s and no wait the old receiver asked for.
            if after.url != before.url:
                resets = ["next_due = CASE WHEN next_due IS NULL THEN NULL ELSE LEAST(next_due, $1) END",
                          "throttled = 0", "hold_until = NULL"]
            else:
                resets = ["next_due = CASE WHEN next_due IS NULL THEN NULL"
                          " ELSE LEAST(next_due, GREATEST($1, COALESCE(hold_until, 0))) END"]
            if after.rate_limit_per_second != before.rate_limit_per_second:
                resets.append("rate_next_at = NULL")
            await c.execute(f"UPDATE hooks SET {', '.join(resets)} WHERE id = $2", now, hook_id)  # noqa: S608
            if after.enabled and not before.enabled:
                await lanes.wake(c, [hook_id], now)
            return before, after

        return await self.db.write(op)

    async def delete_hook(self, tenant_id: str, hook_id: str, now: float) -> None:
        async def op(c: Any) -> None:
            if has_nul(tenant_id, hook_id):
                raise NotFound(f"hook {shown(hook_id)} not found")
            deleted = await c.execute(
                "DELETE FROM hooks WHERE tenant_id = $1 AND id = $2", tenant_id, hook_id
            )
            if status_count(deleted) == 0:
                raise NotFound(f"hook {shown(hook_id)} not found")
            await c.execute(
                "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, lease_owner = NULL,"
                " last_error = 'hook deleted', updated_at = $1 WHERE hook_id = $2 AND status = 'pending'",
                float(now),
                hook_id,
            )
            await c.execute("DELETE FROM delivery_queue WHERE hook_id = $1", hook_id)
            await c.execute("DELETE FROM lane_wakes WHERE hook_id = $1", hook_id)

        await self.db.write(op)

    async def hook_materials(self, tenant_id: str) -> list[HookMaterial]:
        """Every hook of a tenant with its (encrypted) secrets and signing secrets: three queries,
        whatever the number of hooks."""

        async def op(c: Any) -> list[HookMaterial]:
            if has_nul(tenant_id):
                return []
            hooks = [
                hook_from_row(r)
                for r in await c.fetch(
                    f'SELECT {HOOK_COLUMNS} FROM hooks WHERE tenant_id = $1 ORDER BY "order", created_at, id',  # noqa: S608
                    tenant_id,
                )
            ]
            if not hooks:
                return []
            ids = [h.id for h in hooks]
            secrets: dict[str, dict[str, str]] = {h: {} for h in ids}
            for r in await c.fetch(
                "SELECT hook_id, name, value FROM hook_secrets WHERE hook_id = ANY($1::text[])"
                " ORDER BY hook_id, name",
                ids,
            ):
                secrets[r[0]][r[1]] = r[2]
            signing: dict[str, list[SigningSecret]] = {h: [] for h in ids}
            for r in await c.fetch(
                "SELECT hook_id, value, created_at, expires_at, public_key FROM signing_secrets"
                " WHERE hook_id = ANY($1::text[]) ORDER BY id DESC",
                ids,
            ):
                signing[r[0]].append(
                    SigningSecret(value=r[1], created_at=r[2], expires_at=r[3], public_key=r[4])
                )
            return [HookMaterial(hook=h, secrets=secrets[h.id], signing=signing[h.id]) for h in hooks]

        return await self.db.read(op)

    # -- hook secrets ----------------------------------------------------------------------

    async def secret_names(self, tenant_id: str, hook_id: str) -> list[str]:
        async def op(c: Any) -> list[str]:
            await require_hook(c, tenant_id, hook_id)
            rows = await c.fetch("SELECT name FROM hook_secrets WHERE hook_id = $1 ORDER BY name", hook_id)
            return [r[0] for r in rows]

        return await self.db.read(op)

    async def add_secrets(self, tenant_id: str, hook_id: str, values: Mapping[str, str], now: float) -> None:
        now = float(now)

        async def op(c: Any) -> None:
            # Locked: two instances adding secrets at once cannot pass the count together.
            await require_hook(c, tenant_id, hook_id, lock=True)
            existing = {n.lower() for n in await secret_names_of(c, hook_id)}
            clash = sorted(n for n in values if n.lower() in existing)
            if clash:
                raise Conflict(f"secret {clash[0]!r} already exists")
            if len(existing) + len(values) > MAX_SECRETS_PER_HOOK:
                raise BadRequest(f"a hook can have at most {MAX_SECRETS_PER_HOOK} secrets")
            await c.executemany(
                "INSERT INTO hook_secrets (hook_id, name, value, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                [(hook_id, n, v, now, now) for n, v in values.items()],
            )
            await c.execute("UPDATE hooks SET updated_at = $1 WHERE id = $2", now, hook_id)

        await self.db.write(op)

    async def update_secrets(
        self, tenant_id: str, hook_id: str, values: Mapping[str, str], now: float
    ) -> None:
        now = float(now)

        async def op(c: Any) -> None:
            await require_hook(c, tenant_id, hook_id, lock=True)
            await existing_secrets(c, hook_id, values)
            await c.executemany(
                "UPDATE hook_secrets SET value = $1, updated_at = $2 WHERE hook_id = $3 AND name = $4",
                [(v, now, hook_id, n) for n, v in values.items()],
            )
            await c.execute("UPDATE hooks SET updated_at = $1 WHERE id = $2", now, hook_id)

        await self.db.write(op)

    async def delete_secrets(self, tenant_id: str, hook_id: str, names: Sequence[str], now: float) -> None:
        now = float(now)

        async def op(c: Any) -> None:
            await require_hook(c, tenant_id, hook_id, lock=True)
            await existing_secrets(c, hook_id, names)
            await c.execute(
                "DELETE FROM hook_secrets WHERE hook_id = $1 AND name = ANY($2::text[])", hook_id, list(names)
            )
            await c.execute("UPDATE hooks SET updated_at = $1 WHERE id = $2", now, hook_id)

        await self.db.write(op)

    # -- signing secrets -------------------------------------------------------------------

    async def signing_secrets(self, tenant_id: str, hook_id: str, now: float) -> list[SigningSecret]:
        """Valid signing secrets, newest first (expired ones are left out)."""

        async def op(c: Any) -> list[SigningSecret]:
            await require_hook(c, tenant_id, hook_id)
            return [
                SigningSecret(value=r[0], created_at=r[1], expires_at=r[2], public_key=r[3])
                for r in await c.fetch(
                    "SELECT value, created_at, expires_at, public_key FROM signing_secrets"
                    " WHERE hook_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY id DESC",
                    hook_id,
                    float(now),
                )
            ]

        return await self.db.read(op)

    async def rotate_signing_secret(
        self,
        tenant_id: str,
        hook_id: str,
        new_value: str,
        *,
        grace_until: float,
        now: float,
        public_key: str | None = None,
    ) -> None:
        """A new current signing key (v1a when it has a `public_key`, else v1): the hook's scheme
        becomes the key's; the previous current key signs on until `grace_until`."""
        now = float(now)
        scheme = "v1" if public_key is None else "v1a"

        async def op(c: Any) -> None:
            # Locked: two rotations at once would leave two current secrets.
            await require_hook(c, tenant_id, hook_id, lock=True)
            await c.execute(
                "UPDATE signing_secrets SET expires_at = $1 WHERE hook_id = $2 AND expires_at IS NULL",
                float(grace_until),
                hook_id,
            )
            await c.execute(
                "DELETE FROM signing_secrets WHERE hook_id = $1 AND expires_at <= $2", hook_id, now
            )
            await c.execute(
                _INSERT_SIGNING_SECRET,
                hook_id,
                new_value,
                now,
                public_key,
            )
            await c.execute(
                "UPDATE hooks SET updated_at = $1, signature_scheme = $2 WHERE id = $3", now, scheme, hook_id
            )

        await self.db.write(op)


async def _check_hook_quotas(c: Any, hook: Hook, max_per_point: int | None, max_hooks: int | None) -> None:
    """`Forbidden` naming the quota (by its API name) when one more hook would pass it."""
    row = await c.fetchrow(
        "SELECT COUNT(*) FILTER (WHERE trigger_id = $1), COUNT(*) FROM hooks WHERE tenant_id = $2",
        hook.trigger_id,
        hook.tenant_id,
    )
    on_point, total = int(row[0]), int(row[1])
    if max_per_point is not None and on_point >= max_per_point:
        raise Forbidden(
            f"quota 'hooksPerPoint' is {max_per_point}: the tenant has {on_point} hooks on"
            f" {hook.trigger_id!r}; delete one, or ask the operator to raise the quota"
        )
    if max_hooks is not None and total >= max_hooks:
        raise Forbidden(
            f"quota 'hooks' is {max_hooks}: the tenant has {total} hooks;"
            " delete one, or ask the operator to raise the quota"
        )
