"""Scenario 4: a receiver that rate-limits the gateway to 100 requests a second (token bucket
of 100; `X-RateLimit-*` on every answer, `429` with `Retry-After` when empty). We measure the
rate the gateway gets delivered and how many 429s it provokes."""

from __future__ import annotations

import time

from . import bodies, peers
from .gateway import TENANT, Gateway
from .loadgen import Load, run_load
from .results import Context, Section, Target

TRIGGER = "post-user-registration"
LIMIT = 100  # requests a second, and the bucket's size
RATE_TARGET = 90.0
LIMITED_TARGET = 100  # at most one window's worth of 429s
POLL_S = 0.1


def run(ctx: Context) -> Section:
    warm_s, window_s = (2.0, 6.0) if ctx.quick else (2.0, 15.0)
    wd = ctx.workdir / "s4"
    wd.mkdir(parents=True, exist_ok=True)
    section = Section("4", f"Receiver rate limit: {LIMIT} requests/s, token bucket of {LIMIT}")
    body = bodies.write(wd, "pur", bodies.POST_USER_REGISTRATION)
    recv, recv_base = peers.start_receiver(ctx, wd, rate=LIMIT, burst=LIMIT, name="limited-receiver")
    gw = Gateway.prepare(wd / "gateway")
    try:
        gw.start(ctx.pin.server_core)
        gw.create_tenant()
        hook = gw.create_hook(TRIGGER, f"{recv_base}/limited")
        events = int(LIMIT * (warm_s + window_s + 5))
        # The events are in before the window starts; the gateway delivers them as fast as allowed.
        load = Load(f"{gw.base}/v1/tenants/{TENANT}/triggers/{TRIGGER}", body, (gw.service_header(),),
                    concurrency=16, duration_s=60.0, warmup_s=0.0, max_requests=events, expect=202)
        ingested = run_load(load, ctx.pin.peer_core)
        deadline = time.monotonic() + 30.0
        first = None
        while time.monotonic() < deadline:
            s = peers.stats(recv_base)
            if s["requests"] > 0:
                first = time.monotonic()
                break
            time.sleep(POLL_S)
        if first is None:
            raise RuntimeError("no delivery reached the rate-limited receiver")
        time.sleep(max(0.0, first + warm_s - time.monotonic()))
        t0, s0 = time.monotonic(), peers.stats(recv_base)
        time.sleep(window_s)
        t1, s1 = time.monotonic(), peers.stats(recv_base)
    finally:
        gw.stop()
        recv.stop()
    elapsed = t1 - t0
    ok = s1["ok"] - s0["ok"]
    limited = s1["limited"] - s0["limited"]
    got = ok / elapsed
    section.headers = ["window", "delivered (2xx)", "rate", "429s in window", "429s in all", "events queued"]
    section.rows = [[f"{elapsed:.1f} s", f"{ok:,}", f"{got:.1f}/s", f"{limited:,}", f"{s1['limited']:,}",
                     f"{ingested['total']:,}"]]
    section.targets += [
        Target(f"delivered rate >= {RATE_TARGET:.0f}/s", f"{got:.1f}/s", f">= {RATE_TARGET:.0f}/s",
               got >= RATE_TARGET),
        Target(f"429s provoked <= {LIMITED_TARGET} in the window", f"{limited:,}", f"<= {LIMITED_TARGET}",
               limited <= LIMITED_TARGET),
    ]
    section.notes += [
        f"hook {hook['id']} with the default maxConcurrency ({hook['maxConcurrency']}) and no "
        "rateLimitPerSecond; "
        "X-RateLimit-Reset is sent as seconds until the bucket is full again (a small number)",
        f"window starts {warm_s:.0f} s after the first delivery; the receiver counts every request",
    ]
    return section
