"""Operational events: what an operator, and each tenant, should hear about deliveries without
watching a dashboard. Six types, each `{"type", "timestamp", "data"}` (Svix's shape; `data`
names the tenant and ids, never a URL path, a header or a secret):

- `delivery.failing`: a delivery has failed `[events] failing_after` attempts (4) and is retried;
- `delivery.exhausted`: a delivery has failed for good (its schedule or maximum age used up);
- `delivery.recovered`: a delivery that had been reported failing succeeded;
- `hook.disabled`: the gateway disabled a hook (a `410`, `webhook-delivery: disable`, or
  auto-disable after `[delivery] disable_after` of failures), with the reason;
- `destination.paused` / `destination.resumed`: a receiver's `X-RateLimit-*` paused all
  deliveries to its `scheme://host:port`, and the pause has ended.

Delivered as any asynchronous delivery is: each event is an event of the gateway's own tenant
`_ops`, with one delivery per endpoint it goes to, each endpoint a hook of that tenant (the
operator's from `[events]`, a tenant's from `PUT /api/v2/operational-events`: gateway/delivery/
ops_endpoints.py). Retries, leases, crash safety, Standard Webhooks signatures, the egress guard
and pauses come from the durable queue unchanged. Nothing that happens to those deliveries
makes an event (no loops).

An event about an attempt is stored before the attempt's outcome is: a crash between the two
sends the attempt again, and the event may come twice, never not at all (at least once, as every
delivery; receivers deduplicate on `webhook-id`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from .. import ids
from ..crypto import Cipher
from ..registry import HookRegistry
from ..settings import Settings
from ..store.base import Store
from ..store.models import PARKED_AT, Claimed, Hook, Outcome
from ..web import iso
from .ops_endpoints import OPERATOR_HOOK, OPS_TENANT, configure_operator, tenant_hook_id

log = logging.getLogger("gateway.delivery")

FAILING = "delivery.failing"
EXHAUSTED = "delivery.exhausted"
RECOVERED = "delivery.recovered"
HOOK_DISABLED = "hook.disabled"
PAUSED = "destination.paused"
RESUMED = "destination.resumed"
TYPES = (FAILING, EXHAUSTED, RECOVERED, HOOK_DISABLED, PAUSED, RESUMED)

PAUSE_WATCH_S = 1.0  # how often ended pauses are looked for (`destination.resumed` is this late at most)
# `lastError` as the receiver's control header leaves it: an abort is the receiver's decision,
# not an exhausted delivery (gateway/delivery/control.py).
ABORTED = "receiver asked to stop retrying (webhook-delivery: abort)"


def parked(outcome: Outcome) -> bool:
    """The delivery waits for its hook to be enabled again (a `410`, `webhook-delivery: disable`):
    not retried, so not reported failing."""
    return outcome.next_attempt_at is not None and outcome.next_attempt_at >= PARKED_AT


class OpsEvents:
    """Builds operational events and stores them as deliveries to the endpoints that want them."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: HookRegistry,
        *,
        cipher: Cipher | None = None,
        clock: Callable[[], float] = time.time,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._registry = registry
        self._cipher = cipher  # to set up the operator's endpoint; None: no operator endpoint
        self._clock = clock
        self._notify = notify  # the new deliveries are due now: wake the workers
        self._failing_after = settings.events.failing_after
        self._operator_ready = False

    async def prepare(self) -> None:
        """Make the operator's endpoint match `[events]` (at start-up; again at the next event
        if that failed, so a database away at start-up does not lose the operator's events)."""
        if self._settings.events.operator_url is None or self._cipher is None or self._operator_ready:
            return
        try:
            await configure_operator(self._settings, self._store, self._registry, self._cipher, self._clock())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("setting up the operator's operational events endpoint failed; will retry")
            return
        self._operator_ready = True

    # -- what happened ------------------------------------------------------------------------

    async def for_outcome(self, item: Claimed, outcome: Outcome) -> None:
        """`delivery.failing`, `.exhausted` or `.recovered`, if the attempt's outcome is one."""
        d = item.delivery
        if outcome.attempt is None or d.tenant_id == OPS_TENANT:
            return
        made = d.attempt_count + (1 if outcome.uses_attempt else 0)
        data: dict[str, Any] = {
            "hookId": d.hook_id, "deliveryId": d.id, "eventId": d.event_id, "triggerId": d.trigger_id,
            "attemptCount": made,
        }
        if outcome.status == "succeeded":
            # Reported failing before: it had made `failing_after` attempts, all failed.
            if d.attempt_count >= self._failing_after:
                await self.emit(RECOVERED, d.tenant_id, data)
        elif outcome.status == "failed":
            if outcome.last_error != ABORTED:
                await self.emit(EXHAUSTED, d.tenant_id, {**data, "lastError": outcome.last_error})
        elif outcome.uses_attempt and made == self._failing_after and not parked(outcome):
            await self.emit(FAILING, d.tenant_id, {
                **data, "lastError": outcome.last_error, "nextAttemptAt": iso(outcome.next_attempt_at),
            })

    async def hook_disabled(self, hook: Hook, reason: str) -> None:
        await self.emit(HOOK_DISABLED, hook.tenant_id,
                        {"hookId": hook.id, "triggerId": hook.trigger_id, "reason": reason})

    async def paused(self, tenant_id: str, destination: str, until: float, hook_id: str) -> None:
        data = {"destination": destination, "until": iso(until), "hookId": hook_id}
        await self.emit(PAUSED, tenant_id, data)

    async def watch_pauses(self, every_s: float = PAUSE_WATCH_S) -> None:
        """`destination.resumed` for each pause that has run out, once across all instances
        (the store hands each ended pause to one caller)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                ended = await self._store.end_pauses(self._clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("looking for ended destination pauses failed")
                continue
            for p in ended:
                await self.emit(RESUMED, p.tenant_id, {"destination": p.destination})

    # -- sending ------------------------------------------------------------------------------

    async def emit(self, kind: str, tenant_id: str, data: dict[str, Any]) -> None:
        """Store the event with one delivery to each endpoint that wants it: the operator's and
        the tenant's, each if set and enabled. Never raises: an event must not stop a delivery."""
        if tenant_id == OPS_TENANT:
            return
        try:
            targets = await self._targets(tenant_id)
            if not targets:
                return
            now = self._clock()
            body = {"type": kind, "timestamp": iso(now), "data": {"tenant": tenant_id, **data}}
            await self._store.ingest(
                tenant_id=OPS_TENANT, trigger_id=kind, event_id=ids.new_id(ids.EVENT, now=now),
                body=json.dumps(body, separators=(",", ":")).encode(),
                deliveries=[(ids.new_id(ids.DELIVERY, now=now), hook_id) for hook_id in targets],
                kind="async", now=now,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("storing operational event %s of tenant %s failed", kind, tenant_id)
            return
        self._notify()

    async def _targets(self, tenant_id: str) -> list[str]:
        await self.prepare()
        view = await self._registry.view(OPS_TENANT)
        if view is None:  # no endpoint was ever set up
            return []
        wanted = [tenant_hook_id(tenant_id)]
        if self._settings.events.operator_url is not None:  # a hook left from an earlier setting gets none
            wanted.append(OPERATOR_HOOK)
        return [h for h in wanted if h in view.hooks and view.hooks[h].hook.enabled]
