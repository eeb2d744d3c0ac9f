"""Prometheus metrics (prometheus-client), one registry per app so tests stay independent."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter("gateway_events_total", "Events accepted at ingest", ["trigger"], registry=r)
        self.attempts = Counter(
            "gateway_delivery_attempts_total", "Attempts of asynchronous deliveries", ["outcome"], registry=r
        )
        self.invocations = Counter(
            "gateway_sync_invocations_total",
            "Blocking invocations answered",
            ["trigger", "result"],
            registry=r,
        )
        self.invocation_seconds = Histogram(
            "gateway_sync_invocation_seconds",
            "Time to answer a blocking invocation",
            ["trigger"],
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

        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, looked up once: `labels()` takes a lock and builds a key each call."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def invoked(self, trigger: str, result: str, seconds: float) -> None:
        self._child(self.invocation_seconds, trigger).observe(seconds)
        self._child(self.invocations, trigger, result).inc()

    def connected(self, scheme: str) -> None:
        self._child(self.connections, scheme).inc()

    def attempted(self, outcome: str) -> None:
        self._child(self.attempts, outcome).inc()

    def ingested(self, trigger: str) -> None:
        self._child(self.events, trigger).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
