"""What an answer decides beyond its own attempt: the receiver's `webhook-delivery` header, and
auto-disable of a hook that only fails.

- `webhook-delivery: abort` (any case): stop retrying this delivery. It is `failed` at once
  with that reason, unless the attempt succeeded anyway (then there is nothing to stop).
- `webhook-delivery: disable`: disable the hook, as a `410 Gone` does (the delivery waits,
  parked, unless it succeeded), with a reason and a `hook.disabled` event.
- Only the answer of a real attempt counts (a refused or timed-out attempt has no header);
  any other value, or the header given twice, is ignored.
- Auto-disable (Svix's rule): a hook whose attempts have all failed for `[delivery]
  disable_after` (5 days), with no success and no edit of the hook in that time, is disabled
  by its next failed attempt. One success clears the run (`hooks.failing_since`, kept with each
  outcome by the store). A `410` keeps disabling at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from ..registry import HookRegistry, LiveHook
from ..settings import Settings
from ..store.base import Store
from ..store.models import PARKED_AT, Claimed, Outcome
from .attempt import AttemptResult
from .ops_events import ABORTED, OpsEvents, parked

log = logging.getLogger("gateway.delivery")

HEADER = "webhook-delivery"
ABORT, DISABLE = "abort", "disable"
DISABLE_ASKED = "receiver asked to disable the hook (webhook-delivery: disable)"


def stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def asked(result: AttemptResult) -> str | None:
    """`abort`, `disable`, or None: what the receiver's answer asks of the gateway."""
    if result.status_code is None:
        return None
    value = result.headers.get(HEADER)
    if value is None:
        return None
    value = value.strip().lower()
    return value if value in (ABORT, DISABLE) else None


class Control:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: HookRegistry,
        ops: OpsEvents,
        *,
        clock: Callable[[], float],
        disable: Callable[[LiveHook, str], Awaitable[None]],
    ) -> None:
        self._disable_after = settings.delivery.disable_after
        self._store = store
        self._registry = registry
        self._ops = ops
        self._clock = clock
        self._disable = disable  # the engine's: disables, tells the instances, sends `hook.disabled`

    async def judged(self, item: Claimed, live: LiveHook, result: AttemptResult, outcome: Outcome) -> Outcome:
        """The outcome after the receiver's header and the hook's history had their say."""
        d = item.delivery
        word = asked(result)
        if word == ABORT and outcome.status != "succeeded":
            outcome = Outcome(d.id, outcome.attempt or result.record(), "failed", None, True, ABORTED,
                              throttled=outcome.throttled, lane_until=outcome.lane_until)
        elif word == DISABLE and result.status_code != 410:  # a 410 disabled it already
            await self._disable(live, f"{DISABLE_ASKED} at {stamp(self._clock())}")
            if outcome.status != "succeeded":
                outcome = Outcome(d.id, outcome.attempt or result.record(), "pending", PARKED_AT, True,
                                  f"{result.error}; hook disabled", throttled=outcome.throttled,
                                  lane_until=outcome.lane_until)
        if outcome.uses_attempt and outcome.status != "succeeded" and not parked(outcome):
            await self._auto_disable(live)
        return outcome

    async def _auto_disable(self, live: LiveHook) -> None:
        """Disable the hook if its run of failures is `disable_after` old (the store decides, in
        one statement: a success recorded meanwhile by another worker wins)."""
        hook = live.hook
        now = self._clock()
        since = now - self._disable_after
        reason = f"disabled automatically: every attempt failed since before {stamp(since)}"
        try:
            disabled = await self._store.disable_failing_hook(
                hook.tenant_id, hook.id, failing_before=since, reason=reason, now=now
            )
        except Exception:
            log.exception("checking hook %s for auto-disable failed", hook.id)
            return
        if disabled:
            self._registry.invalidate(hook.tenant_id)
            log.warning("hook %s disabled: %s", hook.id, reason)
            await self._ops.hook_disabled(hook, reason)
