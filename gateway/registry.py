"""The in-memory view of each tenant's hooks, ready to call: no database read per invocation.

A view holds the tenant, its hooks with their secrets decrypted once into request headers,
and a `Signer` per hook. Every change through the Management API invalidates the tenant's
view; the next use loads it again. A view also expires when a rotated signing secret's grace
period ends, so the old key stops signing on time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import __version__
from .crypto import Cipher
from .runtime.hosting import Hosting
from .runtime.supervisor import HostedHook
from .signing import Signer
from .store.base import Store
from .store.models import Hook, Tenant
from .transport import header_lines

AUTH0_EXTENSION_SECRET = "auth0-extension-secret"  # noqa: S105 - a secret's name, sent as Bearer


def signing_context(hook_id: str) -> str:
    return f"signing-secret:{hook_id}"


def secret_context(hook_id: str, name: str) -> str:
    return f"hook-secret:{hook_id}:{name.lower()}"


USER_AGENT = f"hooks-gateway/{__version__}"
# Accept-Encoding: answers are small and read whole; compressed ones are decoded all the same.
BASE_HEADERS = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}


@dataclass(frozen=True, slots=True)
class LiveHook:
    hook: Hook
    signer: Signer
    # BASE_HEADERS and the hook's secret headers (Authorization for auth0-extension-secret) as
    # request header lines, rendered once per load
    head: bytes
    # A hook with a `script`: what its runtime process needs, and the hosting that runs it
    # (gateway/runtime/); None for a hook with a `url`.
    hosted: HostedHook | None = None
    hosting: Hosting | None = None

    @classmethod
    def build(cls, hook: Hook, headers: dict[str, str], signer: Signer, *,
              secrets: dict[str, str] | None = None, hosting: Hosting | None = None) -> LiveHook:
        hosted = None
        if hook.script is not None:
            hosted = HostedHook(hook.tenant_id, hook.id, hook.trigger_id, hook.script, dict(secrets or {}),
                                dependencies=hook.dependencies)
        return cls(hook=hook, signer=signer, head=header_lines({**BASE_HEADERS, **headers}), hosted=hosted,
                   hosting=hosting if hosted is not None else None)


@dataclass(slots=True)
class TenantView:
    tenant: Tenant
    hooks: dict[str, LiveHook]
    enabled: dict[str, list[LiveHook]]  # triggerId -> enabled hooks, ascending order
    expires_at: float


def secret_headers(secrets: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in secrets.items():
        if name.lower() == AUTH0_EXTENSION_SECRET:
            out["Authorization"] = f"Bearer {value}"
        else:
            out[name] = value
    return out


class HookRegistry:
    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        *,
        clock: Callable[[], float] = time.time,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._clock = clock
        self._announce = announce  # tells the other instances (gateway/coordination.py)
        self._views: dict[str, TenantView] = {}
        self._versions: dict[str, int] = {}
        self._loading: dict[str, asyncio.Future[TenantView | None]] = {}
        # Runs the hooks with a `script` (set at start, gateway/runtime/lifecycle.py).
        self.hosting = Hosting()

    def invalidate(self, tenant_id: str, *, announce: bool = True) -> None:
        """Drop the tenant's view here, and (unless the news came from elsewhere) everywhere."""
        self._versions[tenant_id] = self._versions.get(tenant_id, 0) + 1
        self._views.pop(tenant_id, None)
        if announce and self._announce is not None:
            self._announce(tenant_id)

    def invalidate_all(self) -> None:
        """Drop every view (news may have been missed while the bus was away)."""
        for tenant_id in list(self._views):
            self.invalidate(tenant_id, announce=False)

    async def view(self, tenant_id: str) -> TenantView | None:
        """The tenant's view, or None for an unknown tenant."""
        view = self._views.get(tenant_id)
        if view is not None and view.expires_at > self._clock():
            return view
        pending = self._loading.get(tenant_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[TenantView | None] = asyncio.get_running_loop().create_future()
        self._loading[tenant_id] = future
        try:
            while True:
                version = self._versions.get(tenant_id, 0)
                loaded = await self._load(tenant_id)
                if self._versions.get(tenant_id, 0) == version:
                    break
            if loaded is not None:
                self._views[tenant_id] = loaded
            future.set_result(loaded)
            return loaded
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, no "never retrieved" warning
            raise
        finally:
            del self._loading[tenant_id]

    async def _load(self, tenant_id: str) -> TenantView | None:
        tenant = await self._store.get_tenant(tenant_id)
        if tenant is None:
            return None
        now = self._clock()
        materials = await self._store.hook_materials(tenant_id)
        hooks: dict[str, LiveHook] = {}
        enabled: dict[str, list[LiveHook]] = {}
        expires_at = now + 3600.0  # reload at least hourly
        for m in materials:
            keys = []
            for s in m.signing:
                if s.expires_at is not None:
                    if s.expires_at <= now:
                        continue
                    expires_at = min(expires_at, s.expires_at)
                keys.append(self._cipher.decrypt(s.value, signing_context(m.hook.id)))
            secrets = {n: self._cipher.decrypt(v, secret_context(m.hook.id, n)) for n, v in m.secrets.items()}
            live = LiveHook.build(m.hook, secret_headers(secrets), Signer(keys), secrets=secrets,
                                  hosting=self.hosting)
            hooks[m.hook.id] = live
            if m.hook.enabled:
                enabled.setdefault(m.hook.trigger_id, []).append(live)
        for chain in enabled.values():
            chain.sort(key=lambda h: (h.hook.order, h.hook.created_at, h.hook.id))
        return TenantView(tenant=tenant, hooks=hooks, enabled=enabled, expires_at=expires_at)
