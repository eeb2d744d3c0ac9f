"""Health at a glance: a hook's attempts of the last 24 hours by the hour (succeeded, failed,
p50 and p99 latency), and what holds its deliveries back (a paused destination, the hook
disabled), from the store's records."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..context import Services
from ..delivery.throttle import destination
from ..store.models import AttemptSample, Hook

WINDOW_S = 24 * 3600.0
BUCKET_S = 3600.0
MAX_SAMPLES = 5_000  # the latest attempts read for one chart: a busier hook's chart is drawn from these


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    succeeded: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class Health:
    hook: Hook
    buckets: list[Bucket]
    succeeded: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    sampled: bool  # more attempts than MAX_SAMPLES: the chart shows a part of them
    destination: str
    paused_until: float | None

    @property
    def summary(self) -> str:
        latency = "" if self.p50_ms is None else (
            f"; latency p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms or 0:.0f} ms")
        return f"Last 24 hours: {self.succeeded} succeeded and {self.failed} failed attempts{latency}."


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def succeeded(sample: AttemptSample) -> bool:
    """A receiver that answered 2xx took the request (an error envelope in a 200 counts too)."""
    return sample.status_code is not None and 200 <= sample.status_code < 300


def buckets(samples: list[AttemptSample], now: float) -> list[Bucket]:
    """24 hourly buckets, the last one ending at the next full hour after `now`."""
    end = math.floor(now / BUCKET_S) * BUCKET_S + BUCKET_S
    start = end - WINDOW_S
    count = int(WINDOW_S / BUCKET_S)
    ok = [0] * count
    bad = [0] * count
    durations: list[list[float]] = [[] for _ in range(count)]
    for s in samples:
        i = int((s.started_at - start) // BUCKET_S)
        if not 0 <= i < count:
            continue
        if succeeded(s):
            ok[i] += 1
        else:
            bad[i] += 1
        if math.isfinite(s.duration_ms):
            durations[i].append(s.duration_ms)
    out = []
    for i in range(count):
        values = sorted(durations[i])
        p50, p99 = percentile(values, 50), percentile(values, 99)
        out.append(Bucket(start + i * BUCKET_S, ok[i], bad[i], p50, p99))
    return out


async def of_hook(svc: Services, tenant: str, hook: Hook) -> Health:
    now = svc.clock()
    end = math.floor(now / BUCKET_S) * BUCKET_S + BUCKET_S
    since = end - WINDOW_S
    samples = await svc.store.attempt_samples(
        tenant, hook.id, since=since, created_since=since - svc.settings.delivery.max_age, limit=MAX_SAMPLES
    )
    dest = destination(hook.url)
    durations = sorted(s.duration_ms for s in samples if math.isfinite(s.duration_ms))
    return Health(
        hook=hook,
        buckets=buckets(samples, now),
        succeeded=sum(1 for s in samples if succeeded(s)),
        failed=sum(1 for s in samples if not succeeded(s)),
        p50_ms=percentile(durations, 50),
        p99_ms=percentile(durations, 99),
        sampled=len(samples) >= MAX_SAMPLES,
        destination=dest,
        paused_until=await svc.store.get_pause(tenant, dest, now),
    )
