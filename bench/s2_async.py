"""Scenario 2: asynchronous points. Ingest alone (202 answers a second, each after the event is
committed), then end to end (ingest, claim, sign, send, record) against the bare relay."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from . import bodies, peers
from .cpu import Meter
from .gateway import TENANT, Gateway
from .loadgen import Load, finish_load, run_load, start_load
from .profile import profile_load
from .results import Context, Section, Target, rate, ratio

TRIGGER = "post-user-registration"
INGEST_TARGET = 5000.0  # 202 answers a second
E2E_TARGET = 0.5  # delivered and recorded a second >= this x bare relay req/s
E2E_CONCURRENCY = 64  # the load generator's, and the hook's maxConcurrency
POLL_S = 0.2


def run(ctx: Context) -> Section:
    wd = ctx.workdir / "s2"
    wd.mkdir(parents=True, exist_ok=True)
    section = Section("2", "Asynchronous post-user-registration: ingest alone, and end to end")
    body = bodies.write(wd, "pur", bodies.POST_USER_REGISTRATION)
    recv, recv_base = peers.start_receiver(ctx, wd)
    try:
        relay_rate = ctx.shared.get("relay_rate") or _relay_rate(ctx, wd, recv_base)
        ingest = _ingest_alone(ctx, wd / "ingest", body, section)
        e2e = _end_to_end(ctx, wd / "e2e", body, recv_base, section)
    finally:
        recv.stop()
    relay_cpu = ctx.shared.get("relay_cpu_us")
    section.headers = ["measurement", "rate", "vs bare relay", "gateway CPU/event", "detail"]
    section.rows = [
        ["bare relay (scenario 1, c=64)", rate(relay_rate), "1.00x",
         f"{relay_cpu:.0f} us (relay)" if relay_cpu else "-", "request forwarded and answered"],
        ["ingest alone (202/s, c=64)", rate(ingest["rate"]), ratio(ingest["rate"] / relay_rate),
         f"{ingest['cpu_us']:.0f} us",
         f"p50 {ingest['p50_ms']:.2f} ms, p99 {ingest['p99_ms']:.2f} ms; {ingest['stored']:,} events stored"],
        ["end to end (delivered+recorded/s)", rate(e2e["rate"]), ratio(e2e["rate"] / relay_rate),
         f"{e2e['cpu_us']:.0f} us",
         f"{e2e['succeeded']:,} events in {e2e['elapsed']:.1f} s (ingest {e2e['ingest_s']:.1f} s at "
         f"{e2e['ingest_rate']:,.0f}/s, delivered {e2e['during']:,} meanwhile"
         + (f"; drained the rest at {e2e['drain_rate']:,.0f}/s)"
            if e2e["succeeded"] > e2e["during"] else ")")],
    ]
    section.targets += [
        Target("ingest alone >= 5,000 events/s", rate(ingest["rate"]), ">= 5,000/s",
               ingest["rate"] >= INGEST_TARGET),
        Target("end to end >= 0.5x bare relay", f"{ratio(e2e['rate'] / relay_rate)} ({rate(e2e['rate'])})",
               f">= {E2E_TARGET}x", e2e["rate"] / relay_rate >= E2E_TARGET),
    ]
    section.notes += [
        "ingest alone: the tenant has no hook, so only the ingest path runs: token check, body "
        "validation, the event row committed (group commit, synchronous=FULL) before the 202",
        f"end to end: one enabled hook with maxConcurrency={E2E_CONCURRENCY}, delivery workers and batch at "
        "their defaults; the load generator posts events for the whole ingest window, then the gateway "
        "drains; rate = deliveries succeeded in the database / (first ingest .. last delivery recorded)",
        f"end to end check: receiver got {e2e['received']:,}, database has {e2e['succeeded']:,} succeeded "
        f"of {e2e['ingested']:,} ingested ({e2e['pending']:,} still pending at the end)",
    ]
    return section


def _relay_rate(ctx: Context, wd: Path, recv_base: str) -> float:
    relay, relay_base = peers.start_relay(ctx, wd / "relay", f"{recv_base}/relay")
    try:
        body = bodies.write(wd, "relay", bodies.POST_USER_REGISTRATION)
        d = 3.0 if ctx.quick else 8.0
        result = run_load(Load(f"{relay_base}/relay", body, concurrency=64, duration_s=d), ctx.pin.peer_core)
    finally:
        relay.stop()
    peers.reset(recv_base)
    figure = float(result["rate"])
    ctx.shared["relay_rate"] = figure
    return figure


def _ingest_alone(ctx: Context, wd: Path, body: Path, section: Section) -> dict[str, Any]:
    duration = 3.0 if ctx.quick else 10.0
    gw = Gateway.prepare(wd)
    try:
        proc = gw.start(ctx.pin.server_core)
        gw.create_tenant()
        assert gw.proc is proc
        load = Load(f"{gw.base}/v1/tenants/{TENANT}/triggers/{TRIGGER}", body, (gw.service_header(),),
                    concurrency=64, duration_s=duration, warmup_s=1.0, expect=202)
        with Meter([gw.proc.pid]) as meter:
            result = run_load(load, ctx.pin.peer_core)
        total = int(result["total"])
        result["cpu_us"] = meter.usage.process_s[gw.proc.pid] / max(1, total) * 1e6
        if result["requests"] != result["ok"] or result["errors"]:
            section.notes.append(f"ingest alone: not all answers were 202: {result['statuses']}, "
                                 f"{result['errors']} errors")
        if ctx.profile:
            assert gw.proc is not None
            summary, extra = profile_load(gw.proc.pid, load, ctx.pin.peer_core, wd / "profile-ingest.txt",
                                          "scenario 2: gateway, ingest alone at c=64")
            section.profiles.append(summary)
            total += int(extra["total"])  # type: ignore[call-overload]
        result["stored"] = _events(gw.db_path)
        if result["stored"] < total:
            section.notes.append(f"ingest alone: {total:,} answered 202 but only {result['stored']:,} "
                                 "events stored")
    finally:
        gw.stop()
    return result


def _events(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def _end_to_end(ctx: Context, wd: Path, body: Path, recv_base: str, section: Section) -> dict[str, Any]:
    duration = 6.0 if ctx.quick else 20.0
    drain_bound = 30.0 if ctx.quick else 90.0
    gw = Gateway.prepare(wd)
    try:
        gw.start(ctx.pin.server_core)
        gw.create_tenant()
        gw.create_hook(TRIGGER, f"{recv_base}/e2e", maxConcurrency=E2E_CONCURRENCY)
        url = f"{gw.base}/v1/tenants/{TENANT}/triggers/{TRIGGER}"
        load = Load(url, body, (gw.service_header(),), concurrency=E2E_CONCURRENCY, duration_s=duration,
                    warmup_s=0.0, expect=202)
        out = _measure_e2e(ctx, gw, load, recv_base, drain_bound, wd)
        if ctx.profile:
            assert gw.proc is not None
            peers.reset(recv_base)
            prof_load = Load(url, body, (gw.service_header(),), concurrency=E2E_CONCURRENCY,
                             duration_s=min(duration, 10.0), warmup_s=0.0, expect=202)
            summary, extra = profile_load(gw.proc.pid, prof_load, ctx.pin.peer_core, wd / "profile-e2e.txt",
                                          "scenario 2: gateway, end to end (ingest and delivery at once)")
            section.profiles.append(summary)
            _wait_received(recv_base, int(extra["total"]), drain_bound)  # type: ignore[call-overload]
    finally:
        gw.stop()
    return out


def _wait_received(recv_base: str, n: int, bound_s: float) -> float:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if peers.stats(recv_base)["requests"] >= n:
            return time.time()
        time.sleep(POLL_S)
    return time.time()


def _measure_e2e(ctx: Context, gw: Gateway | list[Gateway], load: Load | list[Load], recv_base: str,
                 drain_bound: float, wd: Path) -> dict[str, Any]:
    """Events posted by `load` (one load generator each, at once), delivered and recorded by the
    gateway instances `gw` (several share one PostgreSQL database)."""
    gws = gw if isinstance(gw, list) else [gw]
    loads = load if isinstance(load, list) else [load]
    peers.reset(recv_base)
    pids = [g.proc.pid for g in gws if g.proc is not None]
    meter = Meter(pids).__enter__()
    t_start = time.time()
    procs = [start_load(one, ctx.pin.peer_core, wd / f"e2e-{i}.ready") for i, one in enumerate(loads)]
    results = [finish_load(proc, one) for proc, one in zip(procs, loads, strict=True)]
    t_ingested = time.time()
    during = int(peers.stats(recv_base)["requests"])
    ingested = sum(int(r["total"]) for r in results)
    # Drained when every delivery is recorded as succeeded (the receiver's count comes first).
    _wait_received(recv_base, ingested, drain_bound)
    deadline = time.monotonic() + 10.0
    succeeded = gws[0].count("succeeded")
    while succeeded < ingested and time.monotonic() < deadline:
        time.sleep(POLL_S)
        succeeded = gws[0].count("succeeded")
    t_done = time.time()
    meter.__exit__()
    received = int(peers.stats(recv_base)["requests"])
    elapsed = t_done - t_start
    drain_s = max(1e-9, t_done - t_ingested)
    ingest_s = t_ingested - t_start
    return {
        "rate": succeeded / elapsed,
        "elapsed": elapsed,
        "ingested": ingested,
        "succeeded": succeeded,
        "received": received,
        "pending": gws[0].count("pending"),
        "during": during,
        "ingest_s": ingest_s,
        "ingest_rate": sum(float(r["rate"]) for r in results),
        "drain_rate": (succeeded - during) / drain_s,
        "cpu_us": sum(meter.usage.process_s.get(pid, 0.0) for pid in pids) / max(1, succeeded) * 1e6,
    }
