"""Scenario 5: a noisy neighbour. A victim tenant's end-to-end latency of asynchronous
deliveries (ingest request sent -> delivery received by its receiver), alone, and again while a
noisy tenant has 10,000 events queued towards a receiver that hangs until the hook's timeout
and towards a hook limited to 1 request a second (its receiver answers at once).

The victim sends at a steady, modest rate; each event carries its number in `user.id`, and the
victim's receiver keeps the first arrival of each number. A delivery that has not arrived a
bounded time after the last send is reported as still pending: the scenario never waits longer.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from pathlib import Path
from typing import Any

import aiohttp

from . import bodies, peers
from .gateway import Gateway
from .loadgen import Load, percentile, run_load
from .results import Context, Section, Target, ratio

TRIGGER = "post-user-registration"
VICTIM, NOISY = "victim", "noisy"
MARK = "victim-seq-"  # in the victim's user.id; the receiver keeps the digits that follow
VICTIM_RATE = 25.0  # events a second
WARMUP_S = 1.0  # the victim's first second of events is sent but not counted
NOISY_EVENTS = 10_000  # each one goes to both noisy hooks
NOISY_INGEST_CONCURRENCY = 32
HANG_TIMEOUT_MS = 5_000  # the hanging hook's timeoutMs
HANG_HOLD_S = 300.0  # the hanging receiver's bound; the gateway gives up long before
NOISY_MAX_CONCURRENCY = 1_000  # the API's maximum, on both noisy hooks
NOISY_RATE_LIMIT = 1.0  # rateLimitPerSecond of the second noisy hook
RATIO_TARGET = 2.0
SEND_TIMEOUT_S = 10.0
NOISE_START_BOUND_S = 15.0  # how long to wait for the noisy hooks' first requests
POLL_S = 0.2


def run(ctx: Context) -> Section:
    duration_s, wait_s = (8.0, 15.0) if ctx.quick else (20.0, 30.0)
    wd = ctx.workdir / "s5"
    wd.mkdir(parents=True, exist_ok=True)
    section = Section("5", "Noisy neighbour: a victim tenant's asynchronous deliveries, alone and beside "
                      "a hanging and a rate-limited hook")
    victim_recv, victim_base = peers.start_receiver(ctx, wd / "victim-receiver", name="victim-receiver",
                                                    mark=MARK)
    noisy_recv, noisy_base = peers.start_receiver(ctx, wd / "noisy-receiver", name="noisy-receiver",
                                                  hang_s=HANG_HOLD_S)
    try:
        alone = _phase(ctx, wd / "alone", victim_base, None, duration_s, wait_s)
        noisy = _phase(ctx, wd / "noisy", victim_base, noisy_base, duration_s, wait_s)
    finally:
        noisy_recv.stop()
        victim_recv.stop()
    _report(section, alone, noisy, duration_s, wait_s)
    return section


# -- one phase: a fresh gateway, the victim's hook, the noise if asked, the victim's events ------


def _phase(ctx: Context, wd: Path, victim_base: str, noisy_base: str | None, duration_s: float,
           wait_s: float) -> dict[str, Any]:
    wd.mkdir(parents=True, exist_ok=True)
    peers.reset(victim_base)
    gw = Gateway.prepare(wd)
    out: dict[str, Any] = {}
    try:
        gw.start(ctx.pin.server_core)
        cfg = gw.settings().delivery
        out["slots"] = (cfg.workers, cfg.batch)
        gw.create_tenant(VICTIM)
        gw.create_hook(TRIGGER, f"{victim_base}/victim", tenant=VICTIM, name="victim")
        if noisy_base is not None:
            out["noise"] = _queue_noise(ctx, gw, wd, noisy_base)
        before = peers.stats(noisy_base) if noisy_base is not None else None
        url = f"{gw.base}/v1/tenants/{VICTIM}/triggers/{TRIGGER}"
        header = gw.service_header(VICTIM).split(":", 1)
        sent, statuses, ingest_ms = asyncio.run(
            _victim_load(url, {header[0]: header[1].strip()}, VICTIM_RATE, WARMUP_S + duration_s))
        if noisy_base is not None and before is not None:
            after = peers.stats(noisy_base)
            out["noise"]["hung"] = int(after["hung"] - before["hung"])
            out["noise"]["answered"] = int(after["ok"] - before["ok"])
        arrived, checked_at = _wait_arrivals(victim_base, set(sent), wait_s)
    finally:
        gw.stop()
    skip = int(VICTIM_RATE * WARMUP_S)
    counted = {i: t for i, t in sent.items() if i >= skip}
    out.update(_latencies(counted, arrived, checked_at))
    out["statuses"] = statuses
    out["ingest_p99_ms"] = percentile(sorted(ingest_ms[skip:]), 0.99)
    return out


def _queue_noise(ctx: Context, gw: Gateway, wd: Path, noisy_base: str) -> dict[str, Any]:
    """The noisy tenant: two hooks on the same point, 10,000 events (20,000 deliveries) queued."""
    gw.create_tenant(NOISY)
    gw.create_hook(TRIGGER, f"{noisy_base}/hang", tenant=NOISY, name="noisy hanging",
                   timeoutMs=HANG_TIMEOUT_MS, maxConcurrency=NOISY_MAX_CONCURRENCY)
    gw.create_hook(TRIGGER, f"{noisy_base}/slow", tenant=NOISY, name="noisy rate limited",
                   rateLimitPerSecond=NOISY_RATE_LIMIT, maxConcurrency=NOISY_MAX_CONCURRENCY)
    peers.reset(noisy_base)
    body = bodies.write(wd, "noisy", bodies.POST_USER_REGISTRATION)
    load = Load(f"{gw.base}/v1/tenants/{NOISY}/triggers/{TRIGGER}", body, (gw.service_header(NOISY),),
                concurrency=NOISY_INGEST_CONCURRENCY, duration_s=60.0, warmup_s=0.0,
                max_requests=NOISY_EVENTS, expect=202)
    t0 = time.monotonic()
    result = run_load(load, ctx.pin.peer_core)
    ingest_s = time.monotonic() - t0
    # The victim starts once both noisy hooks are being delivered to (or the bound has passed).
    deadline = time.monotonic() + NOISE_START_BOUND_S
    while time.monotonic() < deadline:
        s = peers.stats(noisy_base)
        if s["hung"] > 0 and s["ok"] > 0:
            break
        time.sleep(POLL_S)
    return {"queued": int(result["ok"]), "ingest_s": ingest_s, "statuses": result["statuses"]}


async def _victim_load(url: str, headers: dict[str, str], rate: float,
                       duration_s: float) -> tuple[dict[int, float], dict[str, int], list[float]]:
    """Events at a steady `rate` for `duration_s`, each with its number in `user.id`.

    Returns the send time (unix seconds) of each event answered 202, the answers by status, and
    the ingest latencies (ms) in send order (inf for an event not answered 202)."""
    n = int(rate * duration_s)
    payloads = []
    for i in range(n):
        event = copy.deepcopy(bodies.POST_USER_REGISTRATION)
        event["user"]["id"] = f"auth0|{MARK}{i}"  # type: ignore[index]
        payloads.append(bodies.encode(event))
    sent: dict[int, float] = {}
    statuses: dict[str, int] = {}
    ingest_ms = [math.inf] * n
    headers = {**headers, "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> None:
            t0 = time.time()
            try:
                async with session.post(url, data=payloads[i], headers=headers) as resp:
                    await resp.read()
                    key = str(resp.status)
                    if resp.status == 202:
                        sent[i] = t0
                        ingest_ms[i] = (time.time() - t0) * 1000
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

        start = time.monotonic()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return sent, statuses, ingest_ms


def _wait_arrivals(victim_base: str, expected: set[int], wait_s: float) -> tuple[dict[int, float], float]:
    """The victim receiver's arrivals, polled until all expected ones are in or `wait_s` passed."""
    deadline = time.monotonic() + wait_s
    arrived = peers.marks(victim_base)
    while not expected <= arrived.keys() and time.monotonic() < deadline:
        time.sleep(POLL_S)
        arrived = peers.marks(victim_base)
    return arrived, time.time()


def _latencies(sent: dict[int, float], arrived: dict[int, float], checked_at: float) -> dict[str, Any]:
    """p50/p99/max of arrival - send in ms; a pending delivery counts as infinitely late, and
    `pending_s` is the shortest time any pending one has waited (a lower bound on its latency)."""
    lat = sorted((arrived[i] - t) * 1000 if i in arrived else math.inf for i, t in sent.items())
    pending = [checked_at - t for i, t in sent.items() if i not in arrived]
    return {
        "events": len(sent),
        "delivered": len(sent) - len(pending),
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": lat[-1] if lat else math.nan,
        "pending_s": min(pending) if pending else 0.0,
    }


# -- the table -----------------------------------------------------------------------------


def _ms(value: float, pending_s: float) -> str:
    if math.isinf(value):
        return f"still pending after {pending_s:.0f} s"
    return f"{value:,.1f} ms"


def _noise_cell(noise: dict[str, Any] | None) -> str:
    if noise is None:
        return "-"
    return (f"{noise['queued']:,} events queued in {noise['ingest_s']:.1f} s; during the victim's load: "
            f"{noise['hung']:,} requests to the hanging receiver, {noise['answered']:,} answered at once")


def _report(section: Section, alone: dict[str, Any], noisy: dict[str, Any], duration_s: float,
            wait_s: float) -> None:
    section.headers = ["victim", "events", "delivered", "p50", "p99", "max", "ingest p99", "noisy tenant"]
    for label, d in (("alone", alone), ("with the noisy tenant", noisy)):
        section.rows.append([
            label, f"{d['events']:,}", f"{d['delivered']:,}", _ms(d["p50_ms"], d["pending_s"]),
            _ms(d["p99_ms"], d["pending_s"]), _ms(d["max_ms"], d["pending_s"]),
            _ms(d["ingest_p99_ms"], 0.0), _noise_cell(d.get("noise")),
        ])
    base, loud = alone["p99_ms"], noisy["p99_ms"]
    if math.isinf(base):
        measured, passed = f"the victim alone did not get every delivery within {wait_s:.0f} s", False
    elif math.isinf(loud):
        late = noisy["events"] - noisy["delivered"]
        measured = (f"> {noisy['pending_s'] * 1000 / base:,.0f}x ({late:,} of {noisy['events']:,} still "
                    f"pending after {noisy['pending_s']:.0f} s; alone p99 {base:.1f} ms)")
        passed = False
    else:
        measured = f"{ratio(loud / base)} ({loud:.1f} ms vs {base:.1f} ms)"
        passed = loud <= RATIO_TARGET * base
    section.targets.append(Target("victim p99 with a noisy tenant <= 2x its p99 alone", measured,
                                  f"<= {RATIO_TARGET:.0f}x", passed))
    workers, batch = noisy["slots"]
    section.notes += [
        f"victim: one hook (defaults: maxConcurrency 10, timeout 10 s) on {TRIGGER}; {VICTIM_RATE:.0f} "
        f"events/s for {WARMUP_S + duration_s:.0f} s, the first {WARMUP_S:.0f} s not counted; latency = "
        "arrival at the victim's receiver - the moment the ingest request was sent (one clock); a fresh "
        "gateway and database per phase",
        f"noisy tenant: {NOISY_EVENTS:,} events, each delivered to two hooks: one with timeoutMs "
        f"{HANG_TIMEOUT_MS:,} towards a receiver that never answers, one with rateLimitPerSecond "
        f"{NOISY_RATE_LIMIT:g} towards a receiver that answers at once, both with maxConcurrency "
        f"{NOISY_MAX_CONCURRENCY:,}; queued before the victim's first event",
        f"delivery engine at its defaults: {workers} workers x batch {batch}; a victim delivery not "
        f"received {wait_s:.0f} s after the last send counts as still pending (infinitely late)",
        f"victim ingest answers: alone {_statuses(alone['statuses'])}; with the noisy tenant "
        f"{_statuses(noisy['statuses'])}",
        "run alone: `.venv/bin/python -m bench --scenario 5 --update` (rewrites only this section "
        "and its target on docs/BENCHMARKS.md)",
    ]


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{n:,} x {k}" for k, n in sorted(statuses.items()))
