"""The storage interface the rest of the gateway calls; `sqlite.py` implements it and a
PostgreSQL store can implement it without touching the callers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from .models import (
    Attempt,
    AttemptSample,
    Backlog,
    Claimed,
    DashboardSession,
    Delivery,
    Hook,
    HookMaterial,
    Outcome,
    Page,
    Pause,
    QueueGauges,
    SigningSecret,
    SyncRecord,
    Tenant,
)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def create_tenant(self, tenant: Tenant) -> Tenant: ...

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def list_tenants(self, *, offset: int, limit: int) -> Page: ...

    async def update_tenant(self, tenant_id: str, changes: Mapping[str, Any], now: float) -> Tenant: ...

    async def delete_tenant(self, tenant_id: str) -> None: ...

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
        """Insert a hook with its first signing secret (`signing_public_key`: the `whpk_` key of
        a v1a hook's private key, None for v1). Refused in the insert's transaction: a second
        enabled hook of its point with `single_enabled` (409); the tenant's `max_per_point`-th
        hook on its point or `max_hooks`-th hook in all already there (403, naming the quota)."""
        ...

    async def get_hook(self, tenant_id: str, hook_id: str) -> Hook | None: ...

    async def list_hooks(
        self,
        tenant_id: str,
        *,
        enabled: bool | None = None,
        trigger_id: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page: ...

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
        ...

    async def delete_hook(self, tenant_id: str, hook_id: str, now: float) -> None: ...

    async def hook_materials(self, tenant_id: str) -> list[HookMaterial]:
        """Every hook of a tenant with its (encrypted) secrets and signing secrets."""
        ...

    async def secret_names(self, tenant_id: str, hook_id: str) -> list[str]: ...

    async def add_secrets(
        self, tenant_id: str, hook_id: str, values: Mapping[str, str], now: float
    ) -> None: ...

    async def update_secrets(
        self, tenant_id: str, hook_id: str, values: Mapping[str, str], now: float
    ) -> None: ...

    async def delete_secrets(
        self, tenant_id: str, hook_id: str, names: Sequence[str], now: float
    ) -> None: ...

    async def signing_secrets(self, tenant_id: str, hook_id: str, now: float) -> list[SigningSecret]:
        """Valid signing secrets, newest first (expired ones are left out)."""
        ...

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
        """A new current signing key, v1a when it has a `public_key` (else v1): in the same
        transaction the hook's `signature_scheme` becomes the key's, and the previous current key
        signs on until `grace_until`."""
        ...

    async def ingest(
        self,
        *,
        tenant_id: str,
        trigger_id: str,
        event_id: str,
        body: bytes,
        deliveries: Sequence[tuple[str, str]],
        kind: str,
        now: float,
        idempotency_key: str | None = None,
        idempotency_ttl_s: float = 86400.0,
        response: str | None = None,
        status: str = "pending",
        traceparent: str | None = None,
    ) -> str | None:
        """Store an event and one delivery per (delivery id, hook id), atomically.

        With an idempotency key already used (and not expired) by the tenant, stores nothing
        and returns the first request's stored response (`Conflict` when that request was for
        another point); otherwise returns None. `traceparent`: the ingest's trace context, kept
        with the event and handed back with each claimed delivery (`Claimed.traceparent`)."""
        ...

    async def claim_due(
        self, *, now: float, limit: int, lease_s: float, owner: str, tenant_cap: int | None = None,
        recheck: Sequence[str] = (),
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries, an equal share to each hook that may send now
        (under its concurrency cap and rate, its tenant under `tenant_cap` deliveries in flight).
        `recheck`: hooks whose deliveries the caller saw finish since its last claim (their
        outcomes were recorded with `Outcome.hook_id`): each may have a free slot again.

        The lease moves `next_attempt_at` to the lease expiry, so a claimed row is out of the
        due range (no other worker takes it) and comes back by itself if its worker dies.
        """
        ...

    async def next_due(self) -> float | None:
        """When the first hook may send next (None: nothing pending)."""
        ...

    async def repair_lanes(self) -> int:
        """Make due the hooks that have pending deliveries but no due time; returns how many."""
        ...

    async def extend_leases(self, delivery_ids: Sequence[str], until: float, *, owner: str) -> None:
        """Push the lease of deliveries still held by `owner` (and pending) out to `until`."""
        ...

    async def record_outcomes(
        self, outcomes: Sequence[Outcome], now: float, *, owner: str | None = None
    ) -> None:
        """Record attempts and move deliveries on. With `owner`, only rows still leased by it
        (or leased by nobody) change state: a worker whose lease was taken over, or whose
        delivery was cancelled meanwhile, moves nothing on. The attempt it made is still
        recorded, numbered after the delivery's last recorded attempt."""
        ...

    async def record_sync(self, records: Sequence[SyncRecord]) -> None:
        """Record blocking invocations, many in one write: events, deliveries and attempts."""
        ...

    async def defer(self, delivery_ids: Sequence[str], until: float, now: float) -> None:
        """Push deliveries back without using an attempt (destination paused, hook at its cap)."""
        ...

    async def release(self, delivery_ids: Sequence[str], now: float, *, owner: str | None = None) -> None:
        """Give claimed deliveries back at once (clean shutdown). With `owner`, only rows that
        owner still leases: a delivery whose outcome was recorded keeps its due time."""
        ...

    async def list_deliveries(
        self,
        tenant_id: str,
        *,
        hook_id: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page: ...

    async def get_delivery(
        self, tenant_id: str, delivery_id: str
    ) -> tuple[Delivery, list[Attempt]] | None: ...

    async def retry_delivery(self, tenant_id: str, delivery_id: str, now: float) -> Delivery:
        """Make a delivery due now again (a failed or cancelled one becomes pending)."""
        ...

    async def replay(
        self,
        tenant_id: str,
        hook_id: str,
        *,
        since: float,
        until: float,
        statuses: Iterable[str],
        new_id: Callable[[], str],
        limit: int,
        now: float,
        per_hour: int | None = None,
    ) -> tuple[list[str], int]:
        """New deliveries to the hook (at most `limit`) for its events in [since, until) whose
        last finished delivery to it (or, with none finished, last delivery) has one of
        `statuses`. An event that already has a pending delivery to the hook gets none: it is
        skipped. Returns (the new delivery ids, how many events were skipped).

        With `per_hour`, the tenant's replays of the last hour are counted in the same
        transaction: past it, `TooManyRequests` with the seconds until one leaves the window."""
        ...

    async def get_pause(self, tenant_id: str, destination: str, now: float) -> float | None: ...

    async def set_pause(self, tenant_id: str, destination: str, until: float) -> None: ...

    async def purge(self, *, before: float, now: float, batch: int = ...) -> int:
        """Delete finished deliveries, their attempts and events older than `before`, and expired
        idempotency keys (ended pauses are removed by `end_pauses`, which announces each). Pending
        deliveries and their events are kept. Works in transactions of at most `batch`
        deliveries, so concurrent ingests keep committing."""
        ...

    async def backlog(self) -> int: ...

    # -- the dashboard ----------------------------------------------------------------------

    async def create_session(self, session: DashboardSession) -> None:
        """Store a new dashboard session (sessions whose lifetime has ended are deleted too)."""
        ...

    async def get_session(self, token_hash: str) -> DashboardSession | None:
        """The session of that token hash, expired or not (the caller decides, by its clock)."""
        ...

    async def touch_session(self, token_hash: str, now: float) -> None:
        """Record activity: the idle timeout counts from `now`."""
        ...

    async def delete_session(self, token_hash: str) -> None: ...

    async def attempt_samples(
        self, tenant_id: str, hook_id: str, *, since: float, created_since: float, limit: int
    ) -> list[AttemptSample]:
        """Attempts to the tenant's hook started at or after `since`, of its deliveries created
        at or after `created_since`; at most `limit`, in no particular order."""
        ...

    async def list_pauses(self, now: float, *, tenant_id: str | None = None, limit: int = 100) -> list[Pause]:
        """Destinations paused now, of one tenant or of all; the longest pause first."""
        ...

    async def backlog_by_tenant(self, *, limit: int = 100) -> list[Backlog]:
        """Pending deliveries per tenant, the largest backlog first."""
        ...

    # -- metrics --------------------------------------------------------------------------

    async def queue_gauges(self, now: float) -> QueueGauges:
        """Pending deliveries by state (due, scheduled, in_flight, parked), when the oldest was
        created, destinations paused at `now`, disabled hooks (by the gateway, by their tenant):
        read by `/metrics` at each scrape, so from indexes only where the tables can grow."""
        ...

    # -- operating it (gateway/delivery/ops_events.py, gateway/delivery/control.py) -----------

    async def disable_failing_hook(
        self, tenant_id: str, hook_id: str, *, failing_before: float, reason: str, now: float
    ) -> bool:
        """Disable the hook with `reason` if it is enabled, its run of failed attempts (kept by
        `record_outcomes`: `hooks.failing_since`, started by a failed attempt that used a try,
        cleared by a success) began at or before `failing_before`, and it was not edited since
        then. Its pending deliveries are parked as for any disable. True when this call did it."""
        ...

    async def start_pause(self, tenant_id: str, destination: str, until: float) -> bool:
        """`set_pause`, and whether this began a pause (none was recorded for the destination)
        rather than lengthened one: several instances pausing at once see True once."""
        ...

    async def end_pauses(self, now: float) -> list[Pause]:
        """Remove the pauses that have run out and return them, each to one caller only."""
        ...
