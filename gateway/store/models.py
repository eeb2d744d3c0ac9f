"""Rows as typed records; the API renders them, the store reads and writes them.

Records built on every request or delivery (deliveries, attempts, outcomes, sync records, and
the answers and decisions elsewhere marked "built per request") are plain slotted dataclasses,
not frozen ones: a frozen dataclass sets each field through `object.__setattr__`, ~1 us more
per object on Python 3.11, and a blocking call builds about eight of them. Treat them as
read-only all the same; the others stay frozen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The due time of a parked delivery (its hook is disabled): it waits, without using attempts,
# until the hook is enabled again.
PARKED_AT = 1e15
# A rate-limited hook's turns up to this far ahead are claimed at once; each such delivery
# carries its exact send time (`Claimed.not_before`) and its worker waits that short while.
RATE_AHEAD_S = 0.02
MAX_SECRETS_PER_HOOK = 20


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    allowed_cidrs: tuple[str, ...] = ()
    deadlines: dict[str, int] = field(default_factory=dict)  # triggerId -> ms
    max_in_flight: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # Overrides of the [quotas] settings, by API name (gateway/quotas.py); absent = the setting.
    quotas: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hook:
    id: str
    tenant_id: str
    name: str
    trigger_id: str
    url: str
    enabled: bool
    order: int
    timeout_ms: int
    failure_policy: str
    max_concurrency: int
    rate_limit_per_second: float | None
    format: str
    disabled_reason: str | None
    created_at: float
    updated_at: float
    # The Standard Webhooks scheme of the current signing key: "v1" (HMAC-SHA256, `whsec_`) or
    # "v1a" (Ed25519, `whsk_`/`whpk_`); it changes only with that key (gateway/api/signing_secrets.py).
    signature_scheme: str = "v1"
    # A hosted hook's Node.js code (gateway/runtime/), run instead of calling `url` (then "").
    script: str | None = None
    # Its npm packages, (name, version) sorted by name (gateway/runtime/package_specs.py).
    dependencies: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SigningSecret:
    value: str  # ciphertext in the store, plaintext once decrypted by the caller
    created_at: float
    expires_at: float | None  # None: the current secret
    public_key: str | None = None  # `whpk_...` of a v1a key (not secret); None for a v1 secret


@dataclass(frozen=True, slots=True)
class HookMaterial:
    """A hook with everything needed to call it: secrets (still encrypted) and signing keys."""

    hook: Hook
    secrets: dict[str, str]
    signing: list[SigningSecret]


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class Delivery:
    id: str
    tenant_id: str
    event_id: str
    hook_id: str
    trigger_id: str
    kind: str
    status: str
    attempt_count: int
    next_attempt_at: float | None
    last_error: str | None
    created_at: float
    updated_at: float


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class Attempt:
    number: int
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    response_body: str | None
    rl_limit: int | None = None
    rl_remaining: int | None = None
    rl_reset: float | None = None
    retry_after: float | None = None


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class Claimed:
    """A delivery a worker holds a lease on, with its event body."""

    delivery: Delivery
    body: bytes
    throttled: int = 0  # 429s in a row from the hook's receiver when it was claimed
    not_before: float | None = None  # a rate-limited hook's turn, a few ms ahead: send then
    traceparent: str | None = None  # the ingest's W3C trace context, stored with the event (tracing.py)


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class Outcome:
    """What one attempt leaves behind: the record, and the delivery's next state."""

    delivery_id: str
    attempt: Attempt | None
    status: str  # pending | succeeded | failed | cancelled
    next_attempt_at: float | None
    uses_attempt: bool
    last_error: str | None
    # The hook's run of 429s: n after a 429 to a request claimed when the run was n-1, 0 after
    # any other answer (the run is over), None when nothing was answered.
    throttled: int | None = None
    lane_until: float | None = None  # the whole hook waits until then (a pause, a 429's wait)
    hook_id: str = ""  # the delivery's hook, when the caller knows it (saves the store a look-up)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    total: int


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class SyncRow:
    """One hook's part of a blocking invocation."""

    delivery_id: str
    hook_id: str
    status: str
    attempts: list[Attempt]
    last_error: str | None


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class SyncRecord:
    """A blocking invocation as it is recorded after the answer: the event and each hook's part."""

    tenant_id: str
    trigger_id: str
    event_id: str
    body: bytes
    created_at: float
    rows: list[SyncRow]


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """A signed-in dashboard user (gateway/dashboard/sessions.py). Only the SHA-256 of the
    session's token is stored: a copy of the table signs nobody in."""

    token_hash: str  # hex SHA-256 of the cookie's token
    tenant_id: str | None  # None: an operator without a tenant
    subject: str  # who signed in (the IdP's `sub`, or the token's)
    display_name: str  # shown in the page header
    scopes: frozenset[str]  # the Management API scopes the session acts with
    method: str  # "oidc" | "token"
    created_at: float
    last_seen_at: float
    expires_at: float  # the bounded lifetime's end, whatever the activity


@dataclass(frozen=True, slots=True)
class AttemptSample:
    """One attempt to a hook, as a health chart counts it."""

    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Pause:
    """A destination paused by its receiver's rate-limit headers."""

    tenant_id: str
    destination: str
    until: float


@dataclass(frozen=True, slots=True)
class Backlog:
    """One tenant's pending deliveries."""

    tenant_id: str
    pending: int


@dataclass(frozen=True, slots=True)
class QueueGauges:
    """What `/metrics` reads from the database when it is scraped (gateway/metrics.py)."""

    pending: dict[str, int]  # pending deliveries by state: due, scheduled, in_flight, parked
    oldest_pending_at: float | None  # when the oldest pending delivery was created; None: none
    paused_destinations: int  # destinations paused now by their receivers' rate-limit headers
    disabled_hooks: dict[str, int]  # disabled hooks by who disabled them: gateway, tenant
