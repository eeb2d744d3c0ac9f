"""Hooks, their secrets and signing secrets on SQLite; every query scoped to its tenant."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import BadRequest, Conflict, Forbidden, NotFound
from ..database import Database
from ..models import (
    MAX_SECRETS_PER_HOOK,
    PARKED_AT,
    Hook,
    HookMaterial,
    Page,
    SigningSecret,
)
from . import lanes
from .rows import (
    HOOK_COLUMNS,
    HOOK_FIELD_COLUMNS,
    column_value,
    dependencies_column,
    existing_secrets,
    hook_from_row,
    is_unique_violation,
    page,
    require_hook,
    secret_rows,
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
        `max_hooks`, a hook past the tenant's quota is refused (403). Both are checked in the
        transaction of the insert, so concurrent creates cannot both pass at the edge."""

        def op(c: sqlite3.Connection) -> Hook:
            if max_per_point is not None or max_hooks is not None:
                _check_hook_quotas(c, hook, max_per_point, max_hooks)
            if single_enabled and hook.enabled:
                other = c.execute(
                    "SELECT name FROM hooks WHERE tenant_id = ? AND trigger_id = ? AND enabled = 1",
                    (hook.tenant_id, hook.trigger_id),
                ).fetchone()
                if other:
                    raise Conflict(f"only one {hook.trigger_id} hook can be enabled; {other[0]!r} already is",
                                   field="enabled")
            try:
                c.execute(
                    f"INSERT INTO hooks ({HOOK_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        hook.signature_scheme,
                        hook.script,
                        dependencies_column(hook.dependencies),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if is_unique_violation(exc):
                    raise Conflict(f"a hook named {hook.name!r} already exists", field="name") from None
                raise
            c.execute(
                "INSERT INTO signing_secrets (hook_id, value, created_at, expires_at, public_key)"
                " VALUES (?, ?, ?, NULL, ?)",
                (hook.id, signing_secret, hook.created_at, signing_public_key),
            )
            return hook

        return await self.db.write(op)

    async def get_hook(self, tenant_id: str, hook_id: str) -> Hook | None:
        def op(c: sqlite3.Connection) -> Hook | None:
            row = c.execute(
                f"SELECT {HOOK_COLUMNS} FROM hooks WHERE tenant_id = ? AND id = ?",  # noqa: S608
                (tenant_id, hook_id),
            ).fetchone()
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
        where: list[str] = ["tenant_id = ?"]
        args: list[Any] = [tenant_id]
        if enabled is not None:
            where.append("enabled = ?")
            args.append(int(enabled))
        if trigger_id is not None:
            where.append("trigger_id = ?")
            args.append(trigger_id)

        def op(c: sqlite3.Connection) -> Page:
            return page(
                c,
                columns=HOOK_COLUMNS,
                table="hooks",
                where=where,
                args=args,
                order='"order", created_at, id',
                offset=offset,
                limit=limit,
                row=hook_from_row,
            )

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
                f"SELECT {HOOK_COLUMNS} FROM hooks WHERE tenant_id = ? AND id = ?",  # noqa: S608
                (tenant_id, hook_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"hook {hook_id!r} not found")
            before = hook_from_row(row)
            if single_enabled_trigger and changes.get("enabled") and not before.enabled:
                other = c.execute(
                    "SELECT name FROM hooks WHERE tenant_id = ? AND trigger_id = ? AND enabled = 1"
                    " AND id != ?",
                    (tenant_id, single_enabled_trigger, hook_id),
                ).fetchone()
                if other:
                    raise Conflict(
                        f"only one {single_enabled_trigger} hook can be enabled; {other[0]!r} already is",
                        field="enabled",
                    )
            sets, args = ["updated_at = ?"], [now]
            for key, value in changes.items():
                sets.append(f"{HOOK_FIELD_COLUMNS[key]} = ?")
                args.append(int(value) if isinstance(value, bool) else column_value(key, value))
            try:
                c.execute(f"UPDATE hooks SET {', '.join(sets)} WHERE id = ?", (*args, hook_id))  # noqa: S608
            except sqlite3.IntegrityError as exc:
                if is_unique_violation(exc):
                    raise Conflict(f"a hook named {changes.get('name')!r} already exists",
                                   field="name") from None
                raise
            after = hook_from_row(
                c.execute(f"SELECT {HOOK_COLUMNS} FROM hooks WHERE id = ?", (hook_id,)).fetchone()  # noqa: S608
            )
            if before.enabled and not after.enabled:
                # Parked: pending deliveries wait, without using attempts, until re-enabled. One
                # in flight keeps its lease (its outcome moves it on): parked, an enable would make
                # it due while it is still being sent, and it would stop counting against the cap.
                c.execute(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE hook_id = ? AND status = 'pending'"
                    " AND (lease_owner IS NULL OR next_attempt_at <= ?)",
                    (PARKED_AT, hook_id, now),
                )
            elif after.enabled and not before.enabled:
                c.execute(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE hook_id = ? AND status = 'pending'"
                    " AND next_attempt_at >= ?",
                    (now, hook_id, PARKED_AT),
                )
            # An edit applies to queued work: the lane is looked at again now, under the new
            # limits, but not before a 429's wait (`hold_until`); a new rate starts from a fresh
            # turn, a new URL from no run of 429s and no wait the old receiver asked for.
            if after.url != before.url:
                resets = ["next_due = CASE WHEN next_due IS NULL THEN NULL ELSE MIN(next_due, ?1) END",
                          "throttled = 0", "hold_until = NULL"]
            else:
                resets = ["next_due = CASE WHEN next_due IS NULL THEN NULL"
                          " ELSE MIN(next_due, MAX(?1, COALESCE(hold_until, 0))) END"]
            if after.rate_limit_per_second != before.rate_limit_per_second:
                resets.append("rate_next_at = NULL")
            c.execute(f"UPDATE hooks SET {', '.join(resets)} WHERE id = ?2", (now, hook_id))  # noqa: S608
            if after.enabled and not before.enabled:
                lanes.wake(c, [hook_id], now)
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
                hook_from_row(r)
                for r in c.execute(
                    f'SELECT {HOOK_COLUMNS} FROM hooks WHERE tenant_id = ? ORDER BY "order", created_at, id',  # noqa: S608
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
                    SigningSecret(value=r[0], created_at=r[1], expires_at=r[2], public_key=r[3])
                    for r in c.execute(
                        "SELECT value, created_at, expires_at, public_key FROM signing_secrets"
                        " WHERE hook_id = ? ORDER BY id DESC",
                        (hook.id,),
                    )
                ]
                out.append(HookMaterial(hook=hook, secrets=secrets, signing=signing))
            return out

        return await self.db.read(op)

    # -- hook secrets ----------------------------------------------------------------------

    async def secret_names(self, tenant_id: str, hook_id: str) -> list[str]:
        def op(c: sqlite3.Connection) -> list[str]:
            require_hook(c, tenant_id, hook_id)
            rows = c.execute("SELECT name FROM hook_secrets WHERE hook_id = ? ORDER BY name", (hook_id,))
            return [r[0] for r in rows]

        return await self.db.read(op)

    async def add_secrets(self, tenant_id: str, hook_id: str, values: Mapping[str, str], now: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            require_hook(c, tenant_id, hook_id)
            existing = {r[0].lower() for r in secret_rows(c, hook_id)}
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
            require_hook(c, tenant_id, hook_id)
            existing_secrets(c, hook_id, values)
            c.executemany(
                "UPDATE hook_secrets SET value = ?, updated_at = ? WHERE hook_id = ? AND name = ?",
                [(v, now, hook_id, n) for n, v in values.items()],
            )
            c.execute("UPDATE hooks SET updated_at = ? WHERE id = ?", (now, hook_id))

        await self.db.write(op)

    async def delete_secrets(self, tenant_id: str, hook_id: str, names: Sequence[str], now: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            require_hook(c, tenant_id, hook_id)
            existing_secrets(c, hook_id, names)
            c.executemany(
                "DELETE FROM hook_secrets WHERE hook_id = ? AND name = ?", [(hook_id, n) for n in names]
            )
            c.execute("UPDATE hooks SET updated_at = ? WHERE id = ?", (now, hook_id))

        await self.db.write(op)

    # -- signing secrets -------------------------------------------------------------------

    async def signing_secrets(self, tenant_id: str, hook_id: str, now: float) -> list[SigningSecret]:
        """Valid signing secrets, newest first (expired ones are left out)."""

        def op(c: sqlite3.Connection) -> list[SigningSecret]:
            require_hook(c, tenant_id, hook_id)
            return [
                SigningSecret(value=r[0], created_at=r[1], expires_at=r[2], public_key=r[3])
                for r in c.execute(
                    "SELECT value, created_at, expires_at, public_key FROM signing_secrets"
                    " WHERE hook_id = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC",
                    (hook_id, now),
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
        scheme = "v1" if public_key is None else "v1a"

        def op(c: sqlite3.Connection) -> None:
            require_hook(c, tenant_id, hook_id)
            c.execute(
                "UPDATE signing_secrets SET expires_at = ? WHERE hook_id = ? AND expires_at IS NULL",
                (grace_until, hook_id),
            )
            c.execute("DELETE FROM signing_secrets WHERE hook_id = ? AND expires_at <= ?", (hook_id, now))
            c.execute(
                "INSERT INTO signing_secrets (hook_id, value, created_at, expires_at, public_key)"
                " VALUES (?, ?, ?, NULL, ?)",
                (hook_id, new_value, now, public_key),
            )
            c.execute(
                "UPDATE hooks SET updated_at = ?, signature_scheme = ? WHERE id = ?", (now, scheme, hook_id)
            )

        await self.db.write(op)


def _check_hook_quotas(
    c: sqlite3.Connection, hook: Hook, max_per_point: int | None, max_hooks: int | None
) -> None:
    """`Forbidden` naming the quota (by its API name) when one more hook would pass it."""
    on_point, total = c.execute(
        "SELECT COALESCE(SUM(trigger_id = ?), 0), COUNT(*) FROM hooks WHERE tenant_id = ?",
        (hook.trigger_id, hook.tenant_id),
    ).fetchone()
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
