"""Where operational events go (gateway/delivery/ops_events.py): endpoints kept as hooks of the
gateway's own tenant `_ops`, so that their deliveries are the durable queue's like any other.

- The operator's endpoint, hook `ops-operator`: `[events] operator_url`, signed with
  `operator_secret`; made to match the settings at start-up.
- A tenant's endpoint, hook `ops-tenant-<tenant>`: set by the tenant (`PUT
  /api/v2/operational-events`, gateway/api/operational_events.py), with a signing secret the
  gateway generates and the tenant reads and rotates as a hook's.

`_ops` cannot be a tenant's id (ids match `^[a-z0-9][a-z0-9-]{0,62}$`), so no tenant's token
reaches these hooks through the hook API.
"""

from __future__ import annotations

from ..crypto import Cipher
from ..errors import Conflict, NotFound
from ..registry import HookRegistry, signing_context
from ..settings import Settings
from ..signing import SCHEME_SYMMETRIC, new_signing_secret
from ..store.base import Store
from ..store.models import Hook, Tenant

OPS_TENANT = "_ops"
OPS_TRIGGER = "operational-events"  # not a point: nothing ingests it, no blocking chain calls it
OPERATOR_HOOK = "ops-operator"
_TENANT_HOOK_PREFIX = "ops-tenant-"


def tenant_hook_id(tenant_id: str) -> str:
    return f"{_TENANT_HOOK_PREFIX}{tenant_id}"


def _hook(settings: Settings, hook_id: str, url: str, now: float) -> Hook:
    d = settings.delivery
    return Hook(
        id=hook_id, tenant_id=OPS_TENANT, name=hook_id, trigger_id=OPS_TRIGGER, url=url, enabled=True,
        order=0, timeout_ms=int(d.timeout * 1000), failure_policy="fail",
        max_concurrency=d.default_max_concurrency, rate_limit_per_second=None,
        format="auth0",  # the body as stored: the event's own {type, timestamp, data}
        disabled_reason=None, created_at=now, updated_at=now, signature_scheme=SCHEME_SYMMETRIC,
    )


async def _ensure_tenant(store: Store, now: float) -> None:
    if await store.get_tenant(OPS_TENANT) is not None:
        return
    try:
        await store.create_tenant(Tenant(id=OPS_TENANT, name="operational events (the gateway's own)",
                                         created_at=now, updated_at=now))
    except Conflict:  # another instance made it just now
        pass


async def _put(
    settings: Settings, store: Store, cipher: Cipher, hook_id: str, url: str, secret: str | None, now: float,
) -> tuple[Hook, bool]:
    """Create the endpoint's hook (with `secret`, or a new one), or point it at `url` and enable
    it; returns it and whether it was created."""
    current = await store.get_hook(OPS_TENANT, hook_id)
    if current is None:
        await _ensure_tenant(store, now)
        sealed = cipher.encrypt(secret or new_signing_secret(), signing_context(hook_id))
        try:
            return await store.create_hook(_hook(settings, hook_id, url, now), sealed), True
        except Conflict:  # another instance made it just now
            current = await store.get_hook(OPS_TENANT, hook_id)
            if current is None:
                raise
    if current.url != url or not current.enabled:
        _, current = await store.update_hook(OPS_TENANT, hook_id, {"url": url, "enabled": True,
                                                                  "disabledReason": None}, now)
    return current, False


async def configure_operator(
    settings: Settings, store: Store, registry: HookRegistry, cipher: Cipher, now: float
) -> None:
    """Make the operator's endpoint the one `[events]` names, signing with its secret (a
    changed secret replaces the old one at once: the operator changed both ends)."""
    url, secret = settings.events.operator_url, settings.events.operator_secret
    if url is None or secret is None:
        return
    _, created = await _put(settings, store, cipher, OPERATOR_HOOK, url, secret.get(), now)
    if not created:
        keys = await store.signing_secrets(OPS_TENANT, OPERATOR_HOOK, now)
        current = next((k for k in keys if k.expires_at is None), None)
        if current is None or cipher.decrypt(current.value, signing_context(OPERATOR_HOOK)) != secret.get():
            await store.rotate_signing_secret(
                OPS_TENANT, OPERATOR_HOOK, cipher.encrypt(secret.get(), signing_context(OPERATOR_HOOK)),
                grace_until=now, now=now,
            )
    registry.invalidate(OPS_TENANT)


async def tenant_endpoint(store: Store, tenant_id: str) -> Hook | None:
    return await store.get_hook(OPS_TENANT, tenant_hook_id(tenant_id))


async def set_tenant_endpoint(
    settings: Settings, store: Store, registry: HookRegistry, cipher: Cipher, tenant_id: str, url: str,
    now: float,
) -> tuple[Hook, bool]:
    """The tenant's endpoint at `url`, enabled (a new one gets a new signing secret); returns it
    and whether it was created."""
    hook, created = await _put(settings, store, cipher, tenant_hook_id(tenant_id), url, None, now)
    registry.invalidate(OPS_TENANT)
    return hook, created


async def delete_tenant_endpoint(store: Store, registry: HookRegistry, tenant_id: str, now: float) -> bool:
    """Remove the tenant's endpoint (its pending events are cancelled); False if it had none."""
    try:
        await store.delete_hook(OPS_TENANT, tenant_hook_id(tenant_id), now)
    except NotFound:
        return False
    registry.invalidate(OPS_TENANT)
    return True
