"""Prometheus metrics (prometheus-client), one registry per app so tests stay independent.

Counted as things happen: events, attempts (durable and blocking) and their latency by outcome,
blocking invocations and their latency by point and outcome, the outbound client's connections.
Read when `/metrics` is scraped: pending deliveries by state and the age of the oldest, paused
destinations and disabled hooks (from the database, `refresh`), and the blocking invocations in
flight per tenant (from this process).

Label sets are bounded: no hook or delivery label; a tenant label only on the invocations in
flight, for the `tenant_series` busiest tenants, the others summed under `_other` (an underscore
starts no tenant id). The database gauges describe the whole deployment, so every instance reports
the same values: aggregate them with `max`, not `sum` (docs/grafana-dashboard.json does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from .store.base import Store
    from .store.models import Outcome, QueueGauges

log = logging.getLogger("gateway.metrics")

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
TENANT_SERIES_MAX = 20  # in-flight invocations: this many tenants by name, the rest as `_other`
OTHER_TENANTS = "_other"
PENDING_STATES = ("due", "scheduled", "in_flight", "parked")
DISABLED_BY = ("gateway", "tenant")
# What one attempt came to (`attempt_outcome`), for the latency histogram's `outcome` label.
ATTEMPT_OUTCOMES = ("success", "rate_limited", "http_error", "bad_answer", "timeout", "refused",
                    "network_error", "internal_error")
# What a blocking invocation answered the auth server (`invocation_outcome`).
INVOCATION_OUTCOMES = ("success", "denied", "failed")


def attempt_outcome(status_code: int | None, error: str | None, delivered: bool) -> str:
    """One of `ATTEMPT_OUTCOMES`: delivered (`success`), or why not. `error` is the attempt's
    reason in the gateway's own words (gateway/delivery/attempt.py)."""
    if delivered:
        return "success"
    if status_code is not None:
        if status_code == 429:
            return "rate_limited"
        return "bad_answer" if 200 <= status_code < 300 else "http_error"
    reason = error or ""
    if reason.startswith("timed out") or reason.startswith("deadline of the invocation"):
        return "timeout"
    if reason.startswith("destination refused"):
        return "refused"
    if reason.startswith("internal error"):
        return "internal_error"
    return "network_error"


def invocation_outcome(answer: Mapping[str, Any]) -> str:
    """One of `INVOCATION_OUTCOMES`: `success`; `denied`, an error a hook answered that passes
    through to the auth server (a refused signup, an invalid scope); `failed`, a `ServerError`
    (a hook failed under the `fail` policy, or the gateway did)."""
    if answer.get("status") == "success":
        return "success"
    data = answer.get("data")
    name = data.get("name") if isinstance(data, Mapping) else None
    return "failed" if name in (None, "ServerError") else "denied"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter("gateway_events_total", "Events accepted at ingest", ["trigger"], registry=r)
        self.attempts = Counter(
            "gateway_delivery_attempts_total", "Attempts of asynchronous deliveries", ["outcome"], registry=r
        )
        self.attempt_seconds = Histogram(
            "gateway_attempt_seconds",
            "Time of one request to a receiver, by kind (async: a durable delivery; sync: a blocking "
            "hook call) and outcome",
            ["kind", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.invocations = Counter(
            "gateway_sync_invocations_total",
            "Blocking invocations answered",
            ["trigger", "result"],
            registry=r,
        )
        self.invocation_seconds = Histogram(
            "gateway_sync_invocation_seconds",
            "Time to answer a blocking invocation, by point and outcome (success, denied, failed)",
            ["trigger", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.backlog = Gauge("gateway_delivery_backlog", "Pending deliveries", registry=r)
        self.connections = Counter(
            "gateway_outbound_connections_total", "Connections opened to receivers", ["scheme"], registry=r
        )
        self.closed_reused = Counter(
            "gateway_outbound_closed_reused_total",
            "Requests failed because the receiver closed a reused kept-alive connection before "
            "answering (each is a failed attempt; none is sent again silently)",
            registry=r,
        )
        self.idle = Gauge("gateway_outbound_idle_connections", "Kept-alive connections to receivers, idle",
                          registry=r)
        self.tenant_series = TENANT_SERIES_MAX
        self._in_flight: Mapping[str, int] = {}
        self._gauges: QueueGauges | None = None
        self._now = 0.0
        self._reading: asyncio.Future[QueueGauges] | None = None
        r.register(_ScrapeTime(self))

        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, looked up once: `labels()` takes a lock and builds a key each call."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def invoked(self, trigger: str, answer: Mapping[str, Any], seconds: float) -> None:
        """A blocking invocation answered `answer` after `seconds`."""
        self._child(self.invocation_seconds, trigger, invocation_outcome(answer)).observe(seconds)
        self._child(self.invocations, trigger, str(answer.get("status", "error"))).inc()

    def connected(self, scheme: str) -> None:
        self._child(self.connections, scheme).inc()

    def attempted(self, outcome: Outcome) -> None:
        """A durable attempt's outcome, recorded (no attempt made: nothing counted)."""
        attempt = outcome.attempt
        if attempt is None:
            return
        self._child(self.attempts, outcome.status).inc()
        kind = attempt_outcome(attempt.status_code, attempt.error, outcome.status == "succeeded")
        self._child(self.attempt_seconds, "async", kind).observe(attempt.duration_ms / 1000.0)

    def sync_attempt(self, status_code: int | None, error: str | None, seconds: float) -> None:
        """One request of a blocking invocation to a hook (answered 2xx when `error` is None)."""
        kind = attempt_outcome(status_code, error, error is None)
        self._child(self.attempt_seconds, "sync", kind).observe(seconds)

    def ingested(self, trigger: str) -> None:
        self._child(self.events, trigger).inc()

    def track_in_flight(self, counts: Mapping[str, int]) -> None:
        """The blocking invocations in flight per tenant (the invoker's own, live mapping)."""
        self._in_flight = counts

    async def refresh(self, store: Store, now: float) -> None:
        """Read the database's gauges for the scrape about to be rendered. Scrapes that come
        while a read is running share it; a failed read leaves those gauges out (the rest of
        the metrics matter most while the database is away)."""
        reading = self._reading
        if reading is None or reading.done():
            reading = self._reading = asyncio.ensure_future(store.queue_gauges(now))
        try:
            gauges = await asyncio.shield(reading)
        except Exception as exc:  # noqa: BLE001 - any failure: served without them
            log.warning("metrics: reading the database's gauges failed: %s", type(exc).__name__)
            self._gauges = None
            return
        self._gauges, self._now = gauges, now
        self.backlog.set(sum(gauges.pending.values()))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def in_flight_by_tenant(self) -> list[tuple[str, int]]:
        """(tenant, invocations in flight): the `tenant_series` busiest by name, then `_other`."""
        busy = sorted(((n, t) for t, n in list(self._in_flight.items()) if n > 0),
                      key=lambda x: (-x[0], x[1]))
        shown = [(t, n) for n, t in busy[: self.tenant_series]]
        return [*shown, (OTHER_TENANTS, sum(n for n, _ in busy[self.tenant_series:]))]

    def _scrape_time(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "gateway_sync_in_flight",
            f"Blocking invocations in flight in this instance, per tenant (the busiest {self.tenant_series}; "
            f"the others as {OTHER_TENANTS})",
            labels=["tenant"],
        )
        for tenant, count in self.in_flight_by_tenant():
            in_flight.add_metric([tenant], count)
        yield in_flight
        g = self._gauges
        if g is None:
            return
        pending = GaugeMetricFamily(
            "gateway_deliveries_pending",
            "Pending deliveries by state: due (may go now: waiting for a worker, or for its hook's cap, "
            "rate or pause), scheduled (waiting for a retry or a receiver's 429), in_flight (being sent), "
            "parked (their hook is disabled)",
            labels=["state"],
        )
        for state in PENDING_STATES:
            pending.add_metric([state], g.pending.get(state, 0))
        yield pending
        age = 0.0 if g.oldest_pending_at is None else max(0.0, self._now - g.oldest_pending_at)
        yield GaugeMetricFamily("gateway_delivery_oldest_pending_age_seconds",
                                "Age of the oldest pending delivery (0: none pending)", value=age)
        yield GaugeMetricFamily("gateway_destinations_paused",
                                "Destinations paused by their receivers' X-RateLimit-* headers",
                                value=g.paused_destinations)
        disabled = GaugeMetricFamily("gateway_hooks_disabled",
                                     "Disabled hooks, by who disabled them: the gateway (410 Gone, "
                                     "failing too long, the receiver asked) or their tenant",
                                     labels=["by"])
        for by in DISABLED_BY:
            disabled.add_metric([by], g.disabled_hooks.get(by, 0))
        yield disabled


class _ScrapeTime:
    """The metrics computed when scraped (a custom collector of the registry)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._scrape_time()

    def describe(self) -> list[Metric]:
        return []  # nothing to collect at registration
